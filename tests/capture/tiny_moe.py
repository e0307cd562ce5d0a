"""Tiny randomly initialised configs of the twelve MoE families routelens records.

Sizes follow Hugging Face's own model testers (hidden 32, 2-4 layers); each config plants the
feature that makes its family differ (dense layers among MoE layers, groups, scaling, biases),
and `EXPECTED_LAYERS` gives the true MoE layer indices those choices imply.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

VOCAB = 97
_ATTN = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, vocab_size=VOCAB)


def _mixtral():
    from transformers import MixtralConfig

    return MixtralConfig(**_ATTN, intermediate_size=64, num_hidden_layers=2, num_local_experts=8, num_experts_per_tok=2)


def _qwen2_moe():
    from transformers import Qwen2MoeConfig

    # layer 1 is dense (mlp_only_layers): MoE layers are 0, 2, 3
    return Qwen2MoeConfig(
        **_ATTN,
        intermediate_size=64,
        num_hidden_layers=4,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        mlp_only_layers=[1],
        decoder_sparse_step=1,
        norm_topk_prob=False,
    )


def _qwen3_moe():
    from transformers import Qwen3MoeConfig

    # decoder_sparse_step=2: only every second layer (1, 3) is MoE
    return Qwen3MoeConfig(
        **_ATTN,
        intermediate_size=64,
        num_hidden_layers=4,
        num_experts=8,
        num_experts_per_tok=3,
        moe_intermediate_size=16,
        decoder_sparse_step=2,
        norm_topk_prob=True,
        head_dim=8,
    )


def _olmoe():
    from transformers import OlmoeConfig

    return OlmoeConfig(**_ATTN, intermediate_size=16, num_hidden_layers=2, num_experts=8, num_experts_per_tok=2)


def _phimoe():
    from transformers import PhimoeConfig

    return PhimoeConfig(**_ATTN, intermediate_size=32, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2)


# multi-head latent attention has as many key/value heads as query heads
_MLA = dict(
    num_key_value_heads=4,
    kv_lora_rank=16,
    q_lora_rank=None,
    qk_nope_head_dim=8,
    qk_rope_head_dim=8,
    v_head_dim=8,
    head_dim=8,
)


def _deepseek_v2():
    from transformers import DeepseekV2Config

    # one group of four kept per token: the two chosen experts often differ from plain top-2

    return DeepseekV2Config(
        **{**_ATTN, **_MLA},
        intermediate_size=64,
        num_hidden_layers=3,
        n_routed_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        n_shared_experts=1,
        first_k_dense_replace=1,
        topk_method="group_limited_greedy",
        n_group=2,
        topk_group=1,
        routed_scaling_factor=2.0,
    )


def _deepseek_v3():
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        **{**_ATTN, **_MLA},
        intermediate_size=64,
        num_hidden_layers=3,
        n_routed_experts=16,
        num_experts_per_tok=4,
        moe_intermediate_size=16,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    )


def _gpt_oss():
    from transformers import GptOssConfig

    return GptOssConfig(
        **_ATTN,
        intermediate_size=16,
        num_hidden_layers=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        head_dim=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )


def _granitemoe():
    from transformers import GraniteMoeConfig

    return GraniteMoeConfig(
        **_ATTN, intermediate_size=16, num_hidden_layers=2, num_local_experts=8, num_experts_per_tok=2
    )


def _dbrx():
    from transformers import DbrxConfig

    # DbrxAttention (5.23) reads attn_config.rope_theta and clamps with clip_qkv: both must be set

    return DbrxConfig(
        d_model=32,
        n_heads=4,
        n_layers=2,
        max_seq_len=64,
        vocab_size=VOCAB,
        attn_config={"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
        ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2, "moe_normalize_expert_weights": 1.0},
    )


def _jamba():
    from transformers import JambaConfig

    # attention at 1, 3 and Mamba at 0, 2; MoE feed-forward at 1, 3 (expert_layer_period=2, offset=1)
    return JambaConfig(
        **_ATTN,
        intermediate_size=32,
        num_hidden_layers=4,
        num_experts=4,
        num_experts_per_tok=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        use_mamba_kernels=False,
        mamba_d_state=4,
        mamba_dt_rank=4,
        mamba_expand=2,
    )


def _llama4():
    from transformers import Llama4TextConfig

    # dense / MoE interleaved as in the 128-expert model: MoE at 1 and 3
    return Llama4TextConfig(
        **_ATTN,
        intermediate_size=16,
        intermediate_size_mlp=32,
        num_hidden_layers=4,
        head_dim=8,
        num_local_experts=4,
        num_experts_per_tok=2,
        moe_layers=[1, 3],
        attention_chunk_size=64,
    )


CONFIGS = {
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "phimoe": _phimoe,
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
    "gpt_oss": _gpt_oss,
    "granitemoe": _granitemoe,
    "dbrx": _dbrx,
    "jamba": _jamba,
    "llama4": _llama4,
}
EXPECTED_LAYERS = {
    "mixtral": [0, 1],
    "qwen2_moe": [0, 2, 3],
    "qwen3_moe": [1, 3],
    "olmoe": [0, 1],
    "phimoe": [0, 1],
    "deepseek_v2": [1, 2],
    "deepseek_v3": [1, 2],
    "gpt_oss": [0, 1],
    "granitemoe": [0, 1],
    "dbrx": [0, 1],
    "jamba": [1, 3],
    "llama4": [1, 3],
}


def build(family: str, seed: int = 0) -> torch.nn.Module:
    """A tiny eval-mode causal LM of `family`, float32, with non-zero router biases where the family has them."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[family]()).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    for name, tensor in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            # large enough that selection on scores + bias differs from plain top-k of the scores
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
    for name, param in model.named_parameters():
        if name.endswith("router.bias"):
            param.data.copy_(torch.randn(param.shape, generator=gen))
    return model


def padded_batch(lengths=(12, 9, 5), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random token ids (B, T) and their attention mask."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), width), generator=gen)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask
