"""Tiny randomly initialised models of any MoE family of the installed transformers, built from
its config class alone: every size field of the (text) config is shrunk by name, and the few
families whose configs need more say so in ONE table, `OVERRIDES`.

Used by the conformance suite; sizes follow Hugging Face's model testers (hidden 32, 2-4 layers,
8 experts, top-2, vocabulary 128), so each model builds and runs in well under a second.
"""

from __future__ import annotations

import dataclasses
import importlib

import torch

from routelens.capture.catalog import text_config_class

VOCAB = 128
LAYERS = 4

# exact field name -> tiny value; applied only to fields the config class declares
_SIZES = {
    "vocab_size": VOCAB, "hidden_size": 32, "d_model": 32, "n_embd": 32, "emb_dim": 32,
    "num_attention_heads": 4, "n_heads": 4, "num_heads": 4, "num_key_value_heads": 2, "n_kv_heads": 2,
    "head_dim": 8, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "qk_head_dim": 16,
    "kv_lora_rank": 16, "q_lora_rank": 16, "o_lora_rank": 16,
    "num_hidden_layers": LAYERS, "num_layers": LAYERS, "n_layers": LAYERS,
    "intermediate_size": 64, "ffn_hidden_size": 64, "moe_intermediate_size": 16, "expert_ffn_hidden_size": 16,
    "shared_expert_intermediate_size": 32, "shared_experts_intermediate_size": 32, "expert_intermediate_size": 16, "moe_ffn_hidden_size": 16,
    "num_experts": 8, "num_local_experts": 8, "n_routed_experts": 8, "moe_num_experts": 8,
    "num_experts_per_tok": 2, "moe_topk": 2, "moe_top_k": 2, "top_k": 2, "num_experts_per_token": 2,
    "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "n_shared_experts": 1,
    "max_position_embeddings": 256, "sliding_window": 8, "attention_chunk_size": 64, "zero_expert_num": 2,
    "top_k_experts": 2, "moe_k": 2, "unpadded_vocab_size": VOCAB, "vocab_size_per_layer_input": VOCAB,
    "hidden_size_per_layer_input": 8, "swa_head_dim": 8, "index_head_dim": 8, "index_topk": 16,
    "linear_num_heads": 2, "linear_head_dim": 8, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4,
}  # fmt: skip
_SWITCHES = {"enable_moe_block": True}  # families whose MoE blocks are off by default (Gemma 4)
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

# model_type -> field overrides for the (text) config, applied after _SIZES; the reason beside each
_MRoPE_HALF = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "mrope_section": [1, 1, 0]}
OVERRIDES: dict[str, dict] = {
    # hybrids: the default layer patterns put no attention layer within 4 layers
    "bailing_hybrid": {"layer_group_size": 2},
    "kimi_linear": {"layer_types": ["linear_attention", "full_attention"] * 2},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"] * 2, "num_dense_layers": 1},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
              "use_mamba_kernels": False, "mamba_d_state": 4, "mamba_dt_rank": 4, "mamba_expand": 2},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"] * 2, "mamba_n_heads": 8, "mamba_d_head": 8, "mamba_d_state": 8, "mamba_chunk_size": 16},
    # per-layer MLP types with no default
    "deepseek_ocr2": {"mlp_layer_types": ["dense", "sparse", "sparse", "sparse"]},
    # attention variants that insist on as many key/value heads as query heads, or on no RoPE
    "dots3_note": {"num_key_value_heads": 4, "use_sliding_window": False},
    "glm5_next": {"num_key_value_heads": 4, "qk_rope_head_dim": 0, "qk_head_dim": 8},
    # multimodal RoPE sections sized for the tiny head
    "glm4v_moe": {"rope_parameters": _MRoPE_HALF},
    "hy_v4_vl": {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}},
    "ernie4_5_vl_moe": {"moe_intermediate_size": [16, 16], "moe_num_experts": 8,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}},
    # DBRX keeps sizes in sub-configs; its attention reads rope_theta and clip_qkv from them
    "dbrx": {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 64,
             "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
             "ffn_config": {"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2,
                            "moe_normalize_expert_weights": 1.0}},
    "zaya": {"num_experts_per_tok": 1},  # top-1 only
    "qwen4_exp": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 8, "indexer_budget": 8,
                  "indexer_compress_ratio": 2, "hc_lowrank": 8, "heads_per_ngram": 2, "ngram_vocab_size_base": 256,
                  "split_ngram_parts": 4},
}  # fmt: skip


def _fields(cls) -> dict[str, object]:
    """Declared fields of a transformers config class with their defaults."""
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls)}
    out = {}
    for klass in reversed(cls.__mro__):
        for name in getattr(klass, "__annotations__", {}):
            out[name] = getattr(cls, name, None)
    return out


def _shrunk(name: str, default, value):
    """`value` shaped like the field's default: a per-layer list stays a list of the same length."""
    if isinstance(default, (list, tuple)) and default and all(isinstance(v, int) for v in default):
        return [value] * len(default)
    return value


def tiny_config(model_type: str, **overrides):
    """A tiny config of the family's text model; `overrides` set fields last."""
    cls = text_config_class(model_type)
    fields = _fields(cls)
    kwargs = {name: _shrunk(name, fields[name], value) for name, value in _SIZES.items() if name in fields}
    if "kv_lora_rank" in fields:  # multi-head latent attention: as many key/value heads as query heads
        kwargs = {**kwargs, **{n: kwargs["num_attention_heads"] for n in ("num_key_value_heads",) if n in fields}}
    for name, value in _TOKENS.items():  # token ids of the full vocabulary would fall outside the tiny one
        if isinstance(fields.get(name), (int, list)):
            kwargs[name] = value
    kwargs.update({name: value for name, value in _SWITCHES.items() if name in fields})
    kwargs.update(OVERRIDES.get(model_type, {}))
    return cls(**{**kwargs, **overrides})


def model_class(config, family_module: str | None = None):
    """The causal LM of `config` where transformers maps one, else its base model, else the family
    module's model class for this config (text towers of some multimodal models)."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return AutoModelForCausalLM
    if type(config) in MODEL_MAPPING:
        return AutoModel
    if family_module:
        module = importlib.import_module(family_module)
        found = [c for c in vars(module).values()
                 if isinstance(c, type) and getattr(c, "config_class", None) is type(config)
                 and c.__name__.endswith(("ForCausalLM", "Model"))]  # fmt: skip
        found.sort(key=lambda c: (not c.__name__.endswith("ForCausalLM"), "Text" not in c.__name__, c.__name__))
        if found:
            return found[0]
    raise LookupError(f"no model class for {type(config).__name__}")


def build(model_type: str, family_module: str | None = None, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny eval-mode float32 model of the family, with non-zero router biases where it has them."""
    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    cls = model_class(config, family_module)
    model = (cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in [*model.named_buffers(), *model.named_parameters()]:
            if name.endswith(("e_score_correction_bias", "router.bias", "expert_bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
    return model

