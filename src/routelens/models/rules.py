"""A one-line routing rule for a family with no hand-written one, read from its router's source.

The rule goes into the trace manifest and `routelens families`; it names the mechanisms the
router and its MoE block use (scoring, bias-corrected or group-limited selection,
renormalisation, scaling, shared and zero-computation experts, token-id hashing). It is a
summary for people: what is recorded never depends on it (the experts' inputs are).
"""

from __future__ import annotations

import functools
import inspect
import re
import sys


@functools.cache
def _class_blocks(module_name: str) -> dict[str, str]:
    """Top-level class name -> its source text, for one module (read and split once)."""
    module = sys.modules.get(module_name)
    try:
        text = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return {}
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^class (\w+)", text, re.M)]
    ends = [s for s, _ in starts[1:]] + [len(text)]
    return {name: text[start:end] for (start, name), end in zip(starts, ends)}


def class_source(cls: type) -> str:
    """The source text of a top-level class ("" when it cannot be read)."""
    return _class_blocks(cls.__module__).get(cls.__name__, "")


def _source(*classes: type) -> str:
    return "\n".join(class_source(cls) for cls in classes)


def _helpers_of(router: type, src: str) -> str:
    """The source of the classes of the router's own module that `src` constructs (`Name(`)."""
    blocks = _class_blocks(router.__module__)
    return "\n".join(text for name, text in blocks.items() if name != router.__name__ and f"{name}(" in src)


def derived_rule(router: type, owner: type, config) -> str:
    """The rule of router class `router` inside MoE block class `owner` in one line; `{norm}` and
    `{scale}` are left for the caller to fill in from the config."""
    own = _source(router)
    src = _source(router, owner) if router is not owner else own
    # the config's switch where the family has one (DeepSeek-V2 `scoring_func`, Cohere2-MoE `expert_selection_fn`)
    scoring_func = next(
        (v for v in (getattr(config, n, None) for n in ("scoring_func", "expert_selection_fn")) if isinstance(v, str)),
        None,
    )
    if isinstance(scoring_func, str):
        first = f"{scoring_func} scores"
    elif "sigmoid" in own:  # the router's own scoring (a block's sigmoid may gate its shared expert)
        first = "sigmoid scores"
    else:
        first = "softmax over E"
    parts = [first]
    if "tid2eid" in src or "HashRouter" in src or "input_ids" in inspect.signature(router.forward).parameters:
        parts.append("hash layers select by token id")
    helpers = _helpers_of(router, src)  # e.g. ERNIE keeps its selection bias in an `Ernie4_5_MoeStatics` module
    if any(word in text for text in (src, helpers) for word in ("correction_bias", "expert_bias")):
        parts.append("selection on scores + a bias correction")
    if "topk_group" in src or "n_group" in src:
        parts.append("group-limited (best topk_group of n_group groups)")
    parts.append("top-k")
    if "norm_topk_prob" in src:
        parts.append("renormalised if norm_topk_prob={norm}")
    elif "keepdim=True)" in own and ".sum(" in own:
        parts.append("renormalised over the k")
    if "routed_scaling_factor" in src:
        parts.append("x routed_scaling_factor={scale}")
    extras = []
    if "shared_expert" in src:
        extras.append("plus shared experts")
    if "zero_expert" in src:
        extras.append("plus zero-computation (identity) experts")
    return " -> ".join(parts) + "".join(f"; {e}" for e in extras)
