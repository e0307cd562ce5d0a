"""The MoE families of the installed transformers, found by structure rather than listed by hand.

A family is a model type whose modeling module holds a model class declaring
`_can_record_outputs["router_logits"]`: transformers itself names the router class there, so
a transformers release that adds a MoE family adds it here with no change to routelens.
`moe_families()` imports each candidate modeling module once (the scan reads the sources first,
so dense families are never imported) and returns one `Family` per model type.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass

_MARKER = '"router_logits"'


@dataclass(frozen=True)
class Family:
    """One MoE model type of the installed transformers."""

    model_type: str  # e.g. "mixtral", "qwen3_vl_moe"
    module: str  # e.g. "transformers.models.mixtral.modeling_mixtral"
    routers: tuple[str, ...]  # router class names from `_can_record_outputs["router_logits"]`
    owners: tuple[str, ...]  # model classes that declare them (text model first where multimodal)

    def __post_init__(self):
        assert self.routers, f"{self.model_type}: a family needs a router class"


def router_classes(model_cls: type) -> list[type]:
    """The router classes a transformers model class records `router_logits` from ([] if none)."""
    recorders = getattr(model_cls, "_can_record_outputs", None) or {}
    entry = recorders.get("router_logits") if isinstance(recorders, dict) else None
    if entry is None:
        return []
    found = []
    for item in entry if isinstance(entry, (list, tuple)) else [entry]:
        cls = getattr(item, "target_class", item)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return found


def _modeling_files() -> list[tuple[str, str]]:
    """(model directory, modeling module name) of every modeling source mentioning router_logits."""
    import transformers

    root = os.path.join(os.path.dirname(transformers.__file__), "models")
    out = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        path = os.path.join(folder, f"modeling_{name}.py")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as fh:
            if _MARKER in fh.read():
                out.append((name, f"transformers.models.{name}.modeling_{name}"))
    return out


def _model_type(folder: str) -> str:
    """The top-level model type of a model directory: the one named after it, else the one whose
    config holds sub-configs (a multimodal model's), else the first."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, model_type_to_module_name

    types = [t for t in CONFIG_MAPPING.keys() if model_type_to_module_name(t) == folder]
    for t in types:
        if t.replace("-", "_") == folder:
            return t
    with_subs = [t for t in types if getattr(CONFIG_MAPPING[t], "sub_configs", None)]
    return (with_subs or types or [folder])[0]


@functools.cache
def moe_families() -> tuple[Family, ...]:
    """Every MoE family of the installed transformers, sorted by model type."""
    families = []
    for folder, name in _modeling_files():
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        routers: list[str] = []
        owners: list[str] = []
        for obj in vars(module).values():
            if not (isinstance(obj, type) and obj.__module__ == name):
                continue
            found = router_classes(obj) if "_can_record_outputs" in vars(obj) else []
            if found:
                owners.append(obj.__name__)
                routers += [c.__name__ for c in found if c.__name__ not in routers]
        if routers:
            owners.sort(key=lambda o: ("Text" not in o, o))
            families.append(Family(_model_type(folder), name, tuple(routers), tuple(owners)))
    return tuple(sorted(families, key=lambda f: f.model_type))


def family(model_type: str) -> Family | None:
    """The family of `model_type`, or None when it is not a MoE family of this transformers."""
    return next((f for f in moe_families() if f.model_type == model_type), None)


def family_name(module_class: type) -> str | None:
    """The family (top-level model type) of a transformers module class, from the model directory
    its modeling module lives in; None outside `transformers.models`."""
    parts = module_class.__module__.split(".")
    if len(parts) < 4 or parts[:2] != ["transformers", "models"]:
        return None
    return _model_type(parts[2])


def text_config_class(model_type: str) -> type:
    """The config class whose model is the family's text decoder (the family's own where it is not
    multimodal; Qwen3-Omni nests its text config inside `thinker_config`)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    for _ in range(3):
        subs = getattr(cls, "sub_configs", None) or {}
        nxt = subs.get("text_config") or subs.get("thinker_config")
        if nxt is None:
            break
        cls = nxt
    return cls
