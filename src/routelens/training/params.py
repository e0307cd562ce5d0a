"""Parameter accounting of a (MoE) causal LM from its config alone: total vs. active per token.

    from routelens.training.params import inspect_model
    report = inspect_model("path/to/model")     # a local dir, a config.json, or a hub id
    report.total_params, report.active_params, report.memory_bytes()["bf16"]

The model is built on PyTorch's meta device (shapes, no storage), so an 8x7B or a 671B model is
counted in seconds with no weights downloaded. Counting the modules transformers actually builds,
rather than re-deriving formulas per family, keeps every architecture's quirks (MLA attention,
shared experts, dense first layers, biases) right by construction.

Conventions:
- Active per token = every non-expert parameter + top_k routed experts of each MoE layer + the
  shared experts. Embedding and lm_head matrices count in full (the convention behind
  "Mixtral-8x7B: 46.7B total, 12.9B active"), although a token reads one embedding row.
- Tied input/output embeddings are one matrix: counted once, under `embeddings`.
- Memory is weights only (no activations, KV cache or optimizer state) at 4/2/1/0.5 bytes per
  parameter; int8/int4 ignore the scales and zero-points that real quantization formats add.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from routelens.errors import RoutelensError


class Component(StrEnum):
    EMBEDDINGS = "embeddings"  # token (and position) embeddings; tied lm_head included
    ATTENTION = "attention"  # q/k/v/o projections, MLA down/up projections, their biases
    ROUTER = "router"  # mlp.gate / router weights (and selection biases)
    EXPERTS_ROUTED = "experts_routed"  # the routed experts; top_k of E active per MoE layer
    SHARED_EXPERTS = "shared_experts"  # always-on experts and their gates (Qwen2-MoE, DeepSeek)
    DENSE_FFN = "dense_ffn"  # feed-forward blocks of dense layers
    NORMS = "norms"  # every RMSNorm/LayerNorm weight, attention's q/k norms included
    LM_HEAD = "lm_head"  # output projection when not tied to the embeddings
    OTHER = "other"  # anything else (listed so that totals stay exact)


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"
    INT4 = "int4"


BYTES_PER_PARAM = {Precision.FP32: 4.0, Precision.BF16: 2.0, Precision.INT8: 1.0, Precision.INT4: 0.5}

# Config fields that hold top-k and the number of routed experts, across MoE families.
_TOP_K_FIELDS = ("num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_topk", "moe_k", "top_k")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


class ComponentCount(NamedTuple):  # a tuple, so that (total, active) compares and unpacks
    total: int  # parameters stored
    active: int  # parameters used for one token


@dataclass(frozen=True)
class ParamReport:
    model: str  # what the user named
    architecture: str  # e.g. MixtralForCausalLM
    model_type: str  # e.g. mixtral
    num_layers: int
    moe_layers: list[int]  # indices of the layers with routed experts
    num_experts: int | None  # routed experts per MoE layer (None for a dense model)
    top_k: int | None
    tied_embeddings: bool
    expert_params: int | None  # parameters of one routed expert
    components: dict[Component, ComponentCount] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        return sum(c.total for c in self.components.values())

    @property
    def active_params(self) -> int:
        return sum(c.active for c in self.components.values())

    def memory_bytes(self, active: bool = False) -> dict[str, int]:
        n = self.active_params if active else self.total_params
        return {p.value: math.ceil(n * BYTES_PER_PARAM[p]) for p in Precision}

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "moe_layers": self.moe_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "tied_embeddings": self.tied_embeddings,
            "expert_params": self.expert_params,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "memory_bytes": self.memory_bytes(),
            "active_memory_bytes": self.memory_bytes(active=True),
            "components": {c.value: {"total": n.total, "active": n.active} for c, n in self.components.items()},
        }


def load_model_config(model: str | os.PathLike):
    """AutoConfig of a local model directory, a config.json file, or a hub id `owner/name`."""
    from transformers import AutoConfig

    text = str(model)
    path = Path(text)
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.endswith(".json")
    if path.is_dir() and not (path / "config.json").is_file():
        raise RoutelensError(f"{path} has no config.json; point MODEL at a model directory or a config.json file.")
    if not path.exists() and not looks_like_hub_id:
        raise RoutelensError(f"no model at {text}: give a model directory, a config.json path, or a hub id owner/name.")
    try:
        return AutoConfig.from_pretrained(text)
    except (OSError, ValueError, KeyError) as exc:  # missing files, offline hub, unknown model_type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RoutelensError(f"could not read the config of {text} ({first}); check the path or hub id.") from None


def build_on_meta(config):
    """The causal LM described by `config`, with parameters on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except ValueError as exc:  # no causal-LM class registered for this config
        raise RoutelensError(
            f"transformers has no causal LM for model_type {config.model_type!r} ({str(exc).splitlines()[0]}); "
            "routelens inspect needs a decoder model."
        ) from None


def component_of(name: str) -> Component:
    """The component a parameter (or persistent buffer) belongs to, from its dotted name."""
    low = name.lower()
    if "norm" in low or re.search(r"(^|\.)ln_", low):
        return Component.NORMS
    if "shared_expert" in low:
        return Component.SHARED_EXPERTS
    if ".experts." in low:
        return Component.EXPERTS_ROUTED
    if re.search(r"\.(gate|router)\.", low) or low.endswith("e_score_correction_bias"):
        return Component.ROUTER
    if "embed" in low or re.search(r"(^|\.)(wte|wpe)\.", low):
        return Component.EMBEDDINGS
    if low.startswith("lm_head.") or ".lm_head." in low:
        return Component.LM_HEAD
    if "attn" in low or "attention" in low:
        return Component.ATTENTION
    if re.search(r"\.(mlp|feed_forward|ffn)\.", low):
        return Component.DENSE_FFN
    return Component.OTHER


def _top_k(config, override: int | None) -> int | None:
    if override is not None:
        return override
    for name in _TOP_K_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _num_experts(module) -> int:
    """Routed experts held by an `experts` module: fused 3D tensors (E, ...) or a list of experts."""
    n = getattr(module, "num_experts", None)
    if isinstance(n, int) and n > 0:
        return n
    params = list(module.parameters(recurse=False))
    if params and params[0].dim() == 3:
        return params[0].shape[0]
    return len(list(module.children()))


def _stored_tensors(model):
    """(name, numel) of every parameter (tied ones once) and persistent buffer (e.g. DeepSeek-V3's
    selection bias, which checkpoints store)."""
    for name, param in model.named_parameters():
        yield name, param.numel()
    for module_name, module in model.named_modules():
        for buf_name, buf in module._buffers.items():
            if buf is not None and buf_name not in module._non_persistent_buffers_set:
                yield f"{module_name}.{buf_name}", buf.numel()


def count_parameters(model, name: str = "", top_k: int | None = None) -> ParamReport:
    """Total and active parameters of a built model (meta or real), per Component."""
    from routelens.models.families import text_config as text_config_of

    config = model.config
    text_config = text_config_of(config)
    experts = {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == "experts"}
    sizes = {n: _num_experts(m) for n, m in experts.items()}
    k = _top_k(text_config, top_k) if experts else None
    if experts and k is None:
        raise RoutelensError(
            f"{name or config.model_type}: found routed experts but no top-k in the config; pass --top-k."
        )
    if k is not None and experts and not 1 <= k <= min(sizes.values()):
        raise RoutelensError(
            f"top-k {k} is outside 1..{min(sizes.values())} (the number of experts); choose a valid --top-k."
        )

    totals: dict[Component, int] = dict.fromkeys(Component, 0)
    active: dict[Component, Fraction] = dict.fromkeys(Component, Fraction(0))  # exact: k/E of each tensor
    for pname, numel in _stored_tensors(model):
        comp = component_of(pname)
        totals[comp] += numel
        if comp is Component.EXPERTS_ROUTED:
            owner = next((m for m in experts if pname.startswith(m + ".")), None)
            assert owner is not None, f"{pname} looks like a routed expert outside an `experts` module"
            active[comp] += Fraction(numel * k, sizes[owner])
        else:
            active[comp] += numel
    moe_layers = sorted({int(m.group(1)) for n in experts if (m := _LAYER.search(f".{n}."))})
    first = next(iter(experts), None)
    expert_params = None
    if first is not None:
        expert_params = sum(p.numel() for p in experts[first].parameters()) // sizes[first]
    tied = (
        model.get_output_embeddings() is not None
        and model.get_input_embeddings() is not None
        and (model.get_output_embeddings().weight is model.get_input_embeddings().weight)
    )
    counts = {c: ComponentCount(totals[c], round(active[c])) for c in Component if totals[c]}
    return ParamReport(
        model=name,
        architecture=type(model).__name__,
        model_type=str(config.model_type),
        num_layers=int(getattr(text_config, "num_hidden_layers", 0) or 0),
        moe_layers=moe_layers,
        num_experts=sizes[first] if first is not None else None,
        top_k=k,
        tied_embeddings=bool(tied),
        expert_params=expert_params,
        components=counts,
    )


def inspect_model(model: str | os.PathLike, top_k: int | None = None) -> ParamReport:
    """Load `model`'s config, build it on the meta device and count its parameters."""
    config = load_model_config(model)
    return count_parameters(build_on_meta(config), name=str(model), top_k=top_k)
