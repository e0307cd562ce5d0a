"""Expert importance from a routing trace, and what removing experts costs.

    trace --importance.py (frequency, weighted, reap per layer and expert, overall and per domain)
      --> which experts to keep (checkpoint.py: per layer, by criterion, group-aware)
      --> surgery.py (the kept experts' weights and router rows, the config's counts)
      --> a smaller checkpoint of the same family (checkpoint.py) / held-out loss without them (ablation.py)

- `configs.py`    ImportanceConfig, PruneConfig, AblateConfig and the criteria; torch-free
- `importance.py` pure functions over a trace's chunks -> per-expert importance
- `surgery.py`    removing experts from a loaded model in place, for every family whose experts are
                  fused (E, ...) parameters or a module list (`why_not_prunable` names the others)
- `checkpoint.py` `prune()`: model + trace -> a checkpoint with N experts per MoE layer
- `ablation.py`   `ablate()`: held-out loss per domain with given experts removed

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from routelens.pruning.configs import AblateConfig, Criterion, ImportanceConfig, PruneConfig
from routelens.pruning.importance import expert_importance

__all__ = ["AblateConfig", "Criterion", "ImportanceConfig", "PruneConfig", "ablate", "expert_importance", "prune"]


def __getattr__(name: str):
    # torch-using entry points, loaded on first use
    if name == "prune":
        from routelens.pruning.checkpoint import prune

        return prune
    if name == "ablate":
        from routelens.pruning.ablation import ablate

        return ablate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
