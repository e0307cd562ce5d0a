"""The MoE families `routelens train` builds from scratch, and how each one balances its experts.

`routelens train --architecture` picks the family; the sizes (`--hidden`, `--num-layers`,
`--num-experts`, `--top-k`, `--intermediate`, `--heads`) mean the same in every family, so a
Mixtral-, OLMoE-, Qwen3-MoE- and DeepSeek-V3-shaped model of one size differ only in how they route:

- mixtral: softmax over the top-k logits (the top-k renormalised); every layer MoE.
- olmoe: softmax over all E experts, then top-k, not renormalised; every layer MoE.
- qwen3_moe: softmax over all E, top-k renormalised (`norm_topk_prob`); every layer MoE.
- deepseek_v3: sigmoid scores; selection by score + a per-expert bias (`e_score_correction_bias`)
  within the best `topk_group` of `n_group` expert groups; the chosen scores renormalised; one
  shared expert beside the routed ones; the first layer dense (`first_k_dense_replace = 1`); MLA
  attention. The groups are 2 (of E/2 experts, the best one taken) where E/2 >= k, else 1.

Balance. Every family gets the per-layer Switch loss (`train.balance_loss`) on the router's
probabilities; for the sigmoid router those are the scores normalised to sum 1 over the experts,
the quantity DeepSeek-V3's complementary balance loss uses (it averages per sequence; we, like the
other families, per batch). DeepSeek-V3 is balanced mainly without a loss: after every step each
expert's selection bias moves by `bias_update_rate` toward balance (up if the expert took fewer
assignments than the mean of its layer, down if more: DeepSeek-V3 section 2.1.2), which
`update_selection_bias` does from the experts each layer was really given. The ST-MoE z-loss is
defined on softmax logits and is applied to softmax routers only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from routelens.config import choice

if TYPE_CHECKING:
    import torch


class Architecture(StrEnum):
    MIXTRAL = "mixtral"
    OLMOE = "olmoe"
    QWEN3_MOE = "qwen3_moe"
    DEEPSEEK_V3 = "deepseek_v3"

    @property
    def model_class(self) -> str:
        """The transformers class `routelens train` writes (training.json's model.architecture)."""
        return {
            "mixtral": "MixtralForCausalLM",
            "olmoe": "OlmoeForCausalLM",
            "qwen3_moe": "Qwen3MoeForCausalLM",
            "deepseek_v3": "DeepseekV3ForCausalLM",
        }[self.value]

    @property
    def sigmoid(self) -> bool:
        return self is Architecture.DEEPSEEK_V3

    @property
    def default_bias_update_rate(self) -> float:
        """DeepSeek-V3's bias update speed (their gamma); 0 for families without a selection bias."""
        return 1e-3 if self is Architecture.DEEPSEEK_V3 else 0.0

    @classmethod
    def of_class(cls, class_name: str) -> Architecture | None:
        return next((a for a in cls if a.model_class == class_name), None)


def parse_architecture(value) -> Architecture:
    return choice(Architecture, value, "--architecture")


def deepseek_groups(num_experts: int, top_k: int) -> int:
    """Expert groups of a DeepSeek-V3-shaped router: 2 (the best one taken) where a half holds k."""
    return 2 if num_experts % 2 == 0 and num_experts // 2 >= top_k else 1


def model_config(config, tokenizer):
    """The transformers config of `config.architecture` at the sizes of `config` (a TrainConfig,
    which imports this module: hence no annotation)."""
    from transformers import DeepseekV3Config, MixtralConfig, OlmoeConfig, Qwen3MoeConfig

    arch = parse_architecture(config.architecture)
    ffn = config.intermediate or 2 * config.hidden
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        num_experts_per_tok=config.top_k,
        max_position_embeddings=max(2048, config.seq_len),
        tie_word_embeddings=True,
        router_aux_loss_coef=config.aux_loss_coef,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch is Architecture.MIXTRAL:
        return MixtralConfig(num_local_experts=config.num_experts, intermediate_size=ffn, sliding_window=None, **common)
    if arch is Architecture.OLMOE:
        return OlmoeConfig(num_experts=config.num_experts, intermediate_size=ffn, norm_topk_prob=False, **common)
    if arch is Architecture.QWEN3_MOE:
        return Qwen3MoeConfig(
            num_experts=config.num_experts,
            moe_intermediate_size=ffn,
            intermediate_size=ffn,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,
            head_dim=config.hidden // config.heads,
            **common,
        )
    head = config.hidden // config.heads
    return DeepseekV3Config(
        n_routed_experts=config.num_experts,
        n_shared_experts=1,
        moe_intermediate_size=ffn,
        intermediate_size=2 * ffn,
        first_k_dense_replace=1 if config.num_layers > 1 else 0,
        n_group=deepseek_groups(config.num_experts, config.top_k),
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.0,
        q_lora_rank=None,
        kv_lora_rank=head,
        qk_nope_head_dim=head,
        qk_rope_head_dim=max(2, head // 2),
        v_head_dim=head,
        **common,
    )


def router_probs(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """(tokens, E) router output -> per-token distribution over the experts (rows sum to 1)."""
    import torch

    logits = logits.float()
    if not sigmoid:
        return torch.softmax(logits, dim=-1)
    scores = logits.sigmoid()
    return scores / scores.sum(dim=-1, keepdim=True)


def selection_bias(site):
    """The per-expert selection bias of a site's router (DeepSeek-V3's `e_score_correction_bias`), or None."""
    return getattr(site.router, "e_score_correction_bias", None)


def update_selection_bias(sites, chosen, rate: float) -> list[float]:
    """Move every expert's selection bias by `rate` toward balance, from the ids each MoE layer
    chose this step (`chosen[layer]`: (tokens, k), `RoutingRecorder.take().experts[:, layer]`);
    returns per layer max load / mean load before the update."""
    import torch

    imbalance = []
    with torch.no_grad():
        for site, ids in zip(sites, chosen):
            bias = selection_bias(site)
            if bias is None:
                continue
            ids = ids.reshape(-1)
            load = torch.bincount(ids[ids < site.num_experts], minlength=site.num_experts).float()
            bias += rate * torch.sign(load.mean() - load).to(bias)
            imbalance.append(float(load.max() / load.mean().clamp(min=1e-9)))
    return imbalance
