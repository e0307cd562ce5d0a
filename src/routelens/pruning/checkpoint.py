"""`prune()`: a MoE checkpoint with N experts per MoE layer, chosen by a trace's importance.

    model + trace --expert_importance--> (L, E) scores of the criterion (or a seeded random draw)
      --choose_experts (best N per layer; per group where the router is group-limited)-->
      --surgery.remove_experts, update_config--> checked: describe_model says N, a forward runs
      --save_pretrained + tokenizer (+ training.json, prune.json)--> OUT, written atomically

The kept experts' weights are bit-equal to the original's and keep their dtype (the model is
loaded as saved). OUT loads with `AutoModelForCausalLM`, traces with `routelens trace` and evaluates
with `routelens eval`, of any family. `prune.json` records the source,
the criterion and the kept ids per layer (new id i = the i-th kept original id).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np

from routelens.config import build_config
from routelens.errors import RoutelensError
from routelens.pruning.configs import Criterion, PruneConfig
from routelens.store import Trace, open_trace

RECORD = "prune.json"


def choose_experts(scores: np.ndarray, n: int, groups: int = 1) -> list[int]:
    """The n experts of highest score (ties: the lower id), sorted; with groups > 1, the best
    n / groups of each of the equal groups of consecutive ids."""
    E = len(scores)
    if groups > 1:
        if n % groups or E % groups:
            raise RoutelensError(
                f"this router picks within {groups} expert groups; keep a multiple of {groups} experts (e.g. --keep {groups * max(1, n // groups)})."
            )
        size = E // groups
        return sorted(
            g * size + e for g in range(groups) for e in choose_experts(scores[g * size : (g + 1) * size], n // groups)
        )
    order = np.lexsort((np.arange(E), -np.asarray(scores, dtype=np.float64)))  # by score descending, then id
    return sorted(int(e) for e in order[:n])


def kept_per_layer(
    scores: np.ndarray | None, layers: list[int], num_experts: int, n: int, groups: list[int], seed: int = 0
) -> dict[int, list[int]]:
    """{layer: kept ids} from (L, E) scores; scores None draws them at random (seeded, per layer)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, layer in enumerate(layers):
        row = rng.random(num_experts) if scores is None else scores[i]
        out[layer] = choose_experts(row, n, groups[i])
    return out


def kept_experts(
    hf_model, importance: dict, n: int, criterion: Criterion | str, *, domain: str | None = None, seed: int = 0
) -> dict[int, list[int]]:
    """{MoE layer: the n expert ids to keep} of a loaded model, ranked by `importance` (the result of
    `expert_importance` on a trace of this model) under `criterion`, or drawn at random (seeded);
    group-limited routers keep as many experts in every group."""
    from routelens.capture import describe_model
    from routelens.models.families import find_routers, text_config
    from routelens.pruning.importance import scores_of
    from routelens.pruning.surgery import num_groups

    criterion = Criterion(criterion)
    spec, text = describe_model(hf_model), text_config(hf_model)
    groups = [num_groups(s, text) for s in find_routers(hf_model)]
    scores = None if criterion is Criterion.RANDOM else scores_of(importance, criterion, domain)
    return kept_per_layer(scores, list(spec.moe_layers), spec.num_experts, n, groups, seed)


def check_trace_matches(trace: Trace, model, spec) -> None:
    """Refuse a trace recorded from another model (other family, layers, experts, top-k or config)."""
    from routelens.models.loading import config_sha256

    recorded = trace.manifest.get("model", {})
    mine = {
        "family": spec.family,
        "moe_layers": list(spec.moe_layers),
        "num_experts": spec.num_experts,
        "top_k": spec.top_k,
    }
    theirs = {
        "family": trace.manifest.get("family"),
        "moe_layers": trace.layers,
        "num_experts": trace.num_experts,
        "top_k": trace.top_k,
    }
    for key in mine:
        if mine[key] != theirs[key]:
            raise RoutelensError(
                f"the trace at {trace.path} has {key}={theirs[key]} but the model has {key}={mine[key]}: it is a trace of "
                "another model; trace this one with `routelens trace MODEL ...`."
            )
    sha = recorded.get("config_sha256")
    if sha is not None and sha != config_sha256(model.config) and sha != _sha_as_traced(model.config, trace):
        raise RoutelensError(
            f"the trace at {trace.path} was recorded from a model with another config ({recorded.get('name_or_path')}); "
            "trace this model with `routelens trace MODEL ...`."
        )


def _sha_as_traced(model_config, trace: Trace) -> str | None:
    """The config's hash with the dtype the trace ran at (`routelens trace --dtype` changes it)."""
    from routelens.models.loading import config_sha256

    dtype = trace.manifest.get("dtype")
    if not dtype:
        return None
    other = copy.deepcopy(model_config)
    other.dtype = dtype
    return config_sha256(other)


def _smoke_forward(model, family: str) -> None:
    """One short forward: a family whose pruned modules disagree fails here, in one line, not later."""
    import torch

    try:
        with torch.inference_mode():
            model(
                input_ids=torch.ones((1, 4), dtype=torch.long, device=next(model.parameters()).device), use_cache=False
            )
    except Exception as exc:
        raise RoutelensError(
            f"the pruned {family} model does not run ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "this family cannot be pruned by slicing its experts."
        ) from None


def check_savable(model, family: str, sites) -> None:
    """Refuse, in one line, a model whose pruned checkpoint would not load: one whose config's expert
    count also sizes experts routelens does not trace (`surgery.untraced_expert_sets`)."""
    from routelens.pruning.surgery import untraced_expert_sets

    others = untraced_expert_sets(model, sites)
    if others:
        raise RoutelensError(
            f"{family} cannot be saved pruned: its config's expert count also sizes {others[0]} "
            f"({len(others)} expert sets routelens does not trace, e.g. vision ones), so the checkpoint "
            "would not load; `routelens ablate` can still remove experts in memory."
        )


def prune_model(model, keep: dict[int, list[int]]) -> dict:
    """Keep experts `keep[layer]` (the same count N in every MoE layer) of a loaded model, in place;
    update its config and check the result. Returns {config field: (before, after)}."""
    from routelens.capture import describe_model
    from routelens.models.families import find_routers
    from routelens.pruning.surgery import remove_experts, update_config

    before = describe_model(model)
    check_savable(model, before.family, find_routers(model))
    counts = {len(ids) for ids in keep.values()}
    assert len(counts) == 1 and set(keep) == set(before.moe_layers), (counts, keep.keys())
    n = counts.pop()
    remove_experts(model, keep)
    changed = update_config(model.config, before.num_experts, n, before.top_k)
    after = describe_model(model)
    if after.num_experts != n or after.top_k != min(before.top_k, n):
        raise RoutelensError(
            f"pruning {before.family} left {after.num_experts} experts, top-{after.top_k} (wanted {n}, "
            f"top-{min(before.top_k, n)}); this family keeps its counts where routelens cannot see them."
        )
    _smoke_forward(model, before.family)
    return changed


def prune(
    model: str | os.PathLike,
    trace: Trace | str | os.PathLike,
    out: str | os.PathLike,
    config: PruneConfig | None = None,
    **overrides,
) -> dict:
    """Write to `out` a checkpoint of `model` with N experts in every MoE layer, the ones `trace`
    ranks highest by the criterion; keyword overrides set PruneConfig fields, e.g.
    `prune("moe/", "trace/", "moe-6/", keep=6, criterion="reap")`. Returns the prune.json record."""
    from routelens.atomic import atomic_dir, write_json
    from routelens.capture import describe_model
    from routelens.lock import output_lock
    from routelens.models.families import find_routers
    from routelens.models.loading import load_model
    from routelens.progress import transformers_bars_off
    from routelens.pruning.importance import expert_importance, scores_of
    from routelens.pruning.surgery import why_not_prunable
    from routelens.trace.config import TraceConfig

    config = build_config(PruneConfig, config, overrides)
    out = Path(out)
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not config.overwrite:
        raise RoutelensError(
            f"--out {out} already exists and is not empty; pass --overwrite to replace it, or choose another --out."
        )
    if Path(os.path.abspath(out)) == Path(os.path.abspath(model)):
        raise RoutelensError(f"--out {out} is the model's own directory; choose another --out.")
    with output_lock(out, what="prune"):
        hf_model, tokenizer = load_model(model, TraceConfig(dtype="auto", progress=False))
        spec = describe_model(hf_model)
        check_trace_matches(trace, hf_model, spec)
        sites = find_routers(hf_model)
        for site in sites:
            reason = why_not_prunable(site)
            if reason:
                raise RoutelensError(f"{spec.family} cannot be pruned: {reason} ({site.name}).")
        check_savable(hf_model, spec.family, sites)  # before the importance is computed
        n = config.kept_count(spec.num_experts)
        result = expert_importance(trace, progress=config.progress)
        freq = scores_of(result, Criterion.FREQUENCY, config.domain)  # an unknown --domain is refused here
        keep = kept_experts(hf_model, result, n, config.criterion, domain=config.domain, seed=config.seed)
        changed = prune_model(hf_model, keep)
        record = {
            "source_model": str(model),
            "trace": str(trace.path),
            "family": spec.family,
            "num_experts_before": spec.num_experts,
            "num_experts": n,
            "top_k_before": spec.top_k,
            "top_k": min(spec.top_k, n),
            "settings": config.to_json(),
            "config_changes": {k: list(v) for k, v in changed.items()},
            "kept": {str(layer): ids for layer, ids in keep.items()},
        }
        # per layer, the share of the trace's assignments that went to the kept experts
        record["kept_assignment_share"] = {
            str(layer): round(float(freq[i][keep[layer]].sum()), 6) for i, layer in enumerate(spec.moe_layers)
        }
        with atomic_dir(out) as tmp, transformers_bars_off():
            hf_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            source_training = Path(model) / "training.json"
            if source_training.is_file():  # how the kept weights were trained; `routelens eval` reads its seq_len
                shutil.copyfile(source_training, Path(tmp) / "training.json")
            write_json(Path(tmp) / RECORD, record, indent=2, newline=True)
    return record


def read_record(model_dir: str | os.PathLike) -> dict | None:
    path = Path(model_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None
