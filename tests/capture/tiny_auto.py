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
    "shared_expert_intermediate_size": 32, "expert_intermediate_size": 16, "moe_ffn_hidden_size": 16,
    "num_experts": 8, "num_local_experts": 8, "n_routed_experts": 8, "moe_num_experts": 8,
    "num_experts_per_tok": 2, "moe_topk": 2, "moe_top_k": 2, "top_k": 2, "num_experts_per_token": 2,
    "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "n_shared_experts": 1,
    "max_position_embeddings": 256, "sliding_window": 8, "attention_chunk_size": 64,
}  # fmt: skip

# model_type -> field overrides for the (text) config, applied after _SIZES; the reason beside each
OVERRIDES: dict[str, dict] = {}


def _fields(cls) -> dict[str, object]:
    """Declared fields of a transformers config class with their defaults."""
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls)}
    out = {}
    for klass in reversed(cls.__mro__):
        for name in getattr(klass, "__annotations__", {}):
            out[name] = getattr(cls, name, None)
    return out


def text_config_class(model_type: str):
    """The config class whose model is the family's text decoder (the family's own, if not multimodal)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    subs = getattr(cls, "sub_configs", None) or {}
    return subs.get("text_config", cls)


def tiny_config(model_type: str):
    """A tiny config of the family's text model."""
    cls = text_config_class(model_type)
    fields = _fields(cls)
    kwargs = {name: value for name, value in _SIZES.items() if name in fields}
    kwargs.update(OVERRIDES.get(model_type, {}))
    return cls(**kwargs)


def model_class(config):
    """The causal LM of `config` where transformers maps one, else its base model."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return AutoModelForCausalLM
    if type(config) in MODEL_MAPPING:
        return AutoModel
    raise LookupError(f"no model class for {type(config).__name__}")


def build(model_type: str, seed: int = 0) -> torch.nn.Module:
    """A tiny eval-mode float32 model of the family, with non-zero router biases where it has them."""
    config = tiny_config(model_type)
    torch.manual_seed(seed)
    model = model_class(config).from_config(config).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in [*model.named_buffers(), *model.named_parameters()]:
            if name.endswith(("e_score_correction_bias", "router.bias", "expert_bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
    return model


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001
        return False
    return True
