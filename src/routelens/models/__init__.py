"""The one owner of "a MoE model": what routelens knows of a Hugging Face MoE and how it reaches in.

- `catalog`: the MoE families of the installed transformers, found by structure.
- `families`: where a model routes (`find_routers` -> `RouterSite`s), what it records
  (`describe_model` -> `MoESpec`), and the one table of how families deviate (`ADAPTERS`).
- `rules`, `unsupported`, `overrides`: the routing rule in one line, the families routelens
  refuses and why, and the one table of per-family exceptions (tiny sizes, padding, weights).
- `tiny`: tiny configs of every family, for the verifier and the tests.
- `loading`: `from_pretrained` with device maps and offload, and the one-line refusals.
- `architectures`: the families `routelens train` builds from scratch.
- `hooks`: the one hook lifecycle. Every hook routelens puts on a model is registered here, in
  three kinds kept apart: reading what the experts receive, an independent reference of the
  routing (for verification), and overriding the selection (capacity, replay).

Everything above this package (capture, trace, engines, training, pruning) asks it and never
reaches into a model on its own.
"""

# Names are read on first use: the package is imported by torch-free code (the simulators read the
# capacity rule, `routelens info` reads nothing of a model), and its families module imports torch.
_FROM = {
    "Hooks": "routelens.models.hooks",
    **dict.fromkeys(
        ["MoESpec", "RouterSite", "RoutingSpec", "Scoring", "describe_model", "find_routers", "supported_families"],
        "routelens.models.families",
    ),
    "text_config": "routelens.models.families",
}
__all__ = sorted(_FROM)


def __getattr__(name: str):
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(_FROM[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
