"""What a family needs that routelens cannot read off its structure: ONE table, data only.

Read by the library's verifier (`routelens families --verify`, the first-batch check of every
trace), by the tiny-model builder (`routelens.models.tiny`) and by the tests alike. A new family
that the generic tiny-config shrink builds and whose capture verifies needs no row here;
docs/families.md says when to add one.

Each row of `OVERRIDES` may set:
  tiny       config fields for the family's tiny test model, applied after the generic shrink,
             each group with the reason it is needed;
  unpadded   why a padded batch routes a document differently from the document alone (attention
             that compresses or indexes across the padded width): such families are traced without
             padding, in batches of windows of equal length;
  weights    why the combination weights are not one factor per token times the family's scores at
             the chosen experts (the verifier then checks `probs` by its range only).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Override:
    tiny: dict = field(default_factory=dict)
    unpadded: str | None = None
    weights: str | None = None


_MROPE_HALF = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "mrope_section": [1, 1, 0]}
_COMPRESSED = "its compressed attention pools keys over the padded width, so padding moves the routing of real tokens"

OVERRIDES: dict[str, Override] = {
    # hybrids: the default layer patterns put no attention layer within 4 layers
    "bailing_hybrid": Override(tiny={"layer_group_size": 2}),
    "kimi_linear": Override(tiny={"layer_types": ["linear_attention", "full_attention"] * 2}),
    "lfm2_moe": Override(tiny={"layer_types": ["conv", "full_attention"] * 2, "num_dense_layers": 1}),
    "jamba": Override(
        tiny={
            "attn_layer_period": 2,
            "attn_layer_offset": 1,
            "expert_layer_period": 2,
            "expert_layer_offset": 1,
            "use_mamba_kernels": False,
            "mamba_d_state": 4,
            "mamba_dt_rank": 4,
            "mamba_expand": 2,
        }
    ),
    "granitemoehybrid": Override(
        tiny={
            "layer_types": ["linear_attention", "full_attention"] * 2,
            "mamba_n_heads": 8,
            "mamba_d_head": 8,
            "mamba_d_state": 8,
            "mamba_chunk_size": 16,
        }
    ),
    # per-layer MLP types with no default
    "deepseek_ocr2": Override(tiny={"mlp_layer_types": ["dense", "sparse", "sparse", "sparse"]}),
    # attention variants that insist on as many key/value heads as query heads, or on no RoPE
    "dots3_note": Override(tiny={"num_key_value_heads": 4, "use_sliding_window": False}),
    "glm5_next": Override(tiny={"num_key_value_heads": 4, "qk_rope_head_dim": 0, "qk_head_dim": 8, "index_kpool": 2}),
    # the config validates NVFP4 key/value rounding (head_dim a multiple of 16) and at most as many
    # indexer heads as query heads per key/value head (4 / 2)
    "kolibri1_1": Override(
        tiny={
            "head_dim": 16,
            "index_num_heads": 2,
            "index_topk": 4,
            "index_pool_size": 32,
            "index_compression": 2,
            "index_num_local_tokens": 4,
            "index_num_sink_tokens": 1,
        }
    ),
    # multimodal RoPE sections sized for the tiny head
    "glm4v_moe": Override(tiny={"rope_parameters": _MROPE_HALF}),
    "hy_v4_vl": Override(
        tiny={"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}}
    ),
    "ernie4_5_vl_moe": Override(
        tiny={
            "moe_intermediate_size": [16, 16],
            "moe_num_experts": 8,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        }
    ),
    # DBRX keeps sizes in sub-configs; its attention reads rope_theta and clip_qkv from them
    "dbrx": Override(
        tiny={
            "d_model": 32,
            "n_heads": 4,
            "n_layers": 2,
            "max_seq_len": 64,
            "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
            "ffn_config": {
                "ffn_hidden_size": 16,
                "moe_num_experts": 4,
                "moe_top_k": 2,
                "moe_normalize_expert_weights": 1.0,
            },
        }
    ),
    "zaya": Override(tiny={"num_experts_per_tok": 1}),  # top-1 only
    "qwen4_exp": Override(
        tiny={
            "indexer_n_heads": 2,
            "indexer_kv_heads": 1,
            "indexer_head_dim": 8,
            "indexer_budget": 8,
            "indexer_compress_ratio": 2,
            "hc_lowrank": 8,
            "heads_per_ngram": 2,
            "ngram_vocab_size_base": 256,
            "split_ngram_parts": 4,
        }
    ),
    "phimoe": Override(
        weights="sparsemixer: each choice's weight is a softmax over the logits left after masking earlier choices"
    ),
    "diffusion_gemma": Override(weights="a learned per-expert scale multiplies each chosen expert's weight"),
    "deepseek_v4": Override(unpadded=_COMPRESSED),
}


def override(model_type: str) -> Override:
    """The row of `model_type` (an empty one for a family that needs nothing)."""
    return OVERRIDES.get(model_type, Override())


def unpadded_reason(model_type: str) -> str | None:
    """Why `model_type` is traced without padding, or None where padding leaves its routing alone."""
    return override(model_type).unpadded
