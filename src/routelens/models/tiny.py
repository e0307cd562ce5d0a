"""Tiny randomly initialised models of any MoE family of the installed transformers, built from
its config class alone: every size field of the (text) config is shrunk by name, and the few
families whose configs need more say so in ONE table (`routelens.models.overrides`).

Used by `routelens families --verify` and by the conformance suite; sizes follow Hugging Face's model testers (hidden 32, 2-4 layers,
8 experts, top-2, vocabulary 128), so each model builds and runs in well under a second.
"""

from __future__ import annotations

import dataclasses
import importlib

import torch

from routelens.models.catalog import text_config_class
from routelens.models.overrides import override

VOCAB = 128
LAYERS = 4

# exact field name -> tiny value; applied only to fields the config class declares
_SIZES = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "d_model": 32,
    "n_embd": 32,
    "emb_dim": 32,
    "num_attention_heads": 4,
    "n_heads": 4,
    "num_heads": 4,
    "num_key_value_heads": 2,
    "n_kv_heads": 2,
    "head_dim": 8,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 8,
    "v_head_dim": 8,
    "qk_head_dim": 16,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "o_lora_rank": 16,
    "num_hidden_layers": LAYERS,
    "num_layers": LAYERS,
    "n_layers": LAYERS,
    "intermediate_size": 64,
    "ffn_hidden_size": 64,
    "moe_intermediate_size": 16,
    "expert_ffn_hidden_size": 16,
    "shared_expert_intermediate_size": 32,
    "shared_experts_intermediate_size": 32,
    "expert_intermediate_size": 16,
    "moe_ffn_hidden_size": 16,
    "num_experts": 8,
    "num_local_experts": 8,
    "n_routed_experts": 8,
    "moe_num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_topk": 2,
    "moe_top_k": 2,
    "top_k": 2,
    "num_experts_per_token": 2,
    "n_group": 2,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "n_shared_experts": 1,
    "max_position_embeddings": 256,
    "sliding_window": 8,
    "attention_chunk_size": 64,
    "zero_expert_num": 2,
    "top_k_experts": 2,
    "moe_k": 2,
    "unpadded_vocab_size": VOCAB,
    "vocab_size_per_layer_input": VOCAB,
    "hidden_size_per_layer_input": 8,
    "swa_head_dim": 8,
    "index_head_dim": 8,
    "index_topk": 4,
    "linear_num_heads": 2,
    "linear_head_dim": 8,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
}
_SWITCHES = {"enable_moe_block": True}  # families whose MoE blocks are off by default (Gemma 4)
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


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
    kwargs.update(override(model_type).tiny)
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
        found = [
            c
            for c in vars(module).values()
            if isinstance(c, type)
            and getattr(c, "config_class", None) is type(config)
            and c.__name__.endswith(("ForCausalLM", "Model"))
        ]
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
