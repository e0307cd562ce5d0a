"""Expert importance from a routing trace: which experts carry the model's computation.

Per MoE layer and expert, over the whole trace and per domain (A = the layer's assignments, the
slots of its tokens' top-k that hold a routed expert; a_e the ones routed to expert e, w their
combination weights, n the L2 norm of the expert's output before weighting):

    frequency_e = a_e / A                      share of assignments (Mixtral, OLMoE load plots)
    weighted_e  = mean(w over a_e) x frequency_e = sum(w over a_e) / A
    reap_e      = mean(w x n over a_e)         REAP (arXiv 2510.13999), where `expert_norms` was stored

An expert no token chose has reap 0. Zero-computation experts and empty slots (ids >= E) are not
routed experts and are left out. The sums are pure functions of chunks (`importance_sums`), so the
trace streams with bounded memory and a planted trace gives closed-form answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from routelens.config import build_config
from routelens.errors import RoutelensError
from routelens.pruning.configs import Criterion, ImportanceConfig
from routelens.store import Trace, open_trace

MEASURED = (Criterion.FREQUENCY, Criterion.WEIGHTED, Criterion.REAP)  # what a trace can tell (random is not measured)


@dataclass
class ImportanceSums:
    """Running sums per (domain, layer, expert)."""

    counts: np.ndarray  # (D, L, E) int64 assignments
    weight: np.ndarray | None  # (D, L, E) float64 sum of combination weights; None without weights
    reap: np.ndarray | None  # (D, L, E) float64 sum of weight x output norm; None without expert_norms
    tokens: np.ndarray  # (D,) int64 tokens

    def __iadd__(self, other: ImportanceSums) -> ImportanceSums:
        self.counts += other.counts
        self.tokens += other.tokens
        for name in ("weight", "reap"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None:
                mine += theirs
        return self

    def of_domain(self, d: int | None) -> ImportanceSums:
        """Domain `d`'s sums, (L, E) each; None: all domains summed."""
        pick = (lambda a: a.sum(axis=0)) if d is None else (lambda a: a[d])
        return ImportanceSums(
            pick(self.counts),
            None if self.weight is None else pick(self.weight),
            None if self.reap is None else pick(self.reap),
            pick(self.tokens),
        )


def importance_sums(
    experts: np.ndarray,
    domain: np.ndarray,
    num_experts: int,
    num_domains: int,
    weights: np.ndarray | None = None,
    norms: np.ndarray | None = None,
) -> ImportanceSums:
    """(tokens, layers, k) expert ids, (tokens,) domain codes, optional (tokens, layers, k) weights
    and expert-output norms -> the sums of one chunk."""
    n, L, k = experts.shape
    E, D = num_experts, num_domains
    ids = experts.astype(np.int64)
    valid = ids < E  # (n, L, k): empty slots and zero-computation experts are not routed experts
    flat = ((domain.astype(np.int64)[:, None, None] * L + np.arange(L)[None, :, None]) * E + ids)[valid]
    size = D * L * E

    def total(values: np.ndarray | None) -> np.ndarray:
        return np.bincount(
            flat, weights=None if values is None else values.astype(np.float64)[valid], minlength=size
        ).reshape(D, L, E)

    counts = total(None).astype(np.int64)
    weight = total(weights) if weights is not None else None
    reap = (
        total(weights.astype(np.float64) * norms.astype(np.float64))
        if weights is not None and norms is not None
        else None
    )
    return ImportanceSums(counts, weight, reap, np.bincount(domain.astype(np.int64), minlength=D).astype(np.int64))


def importance_scores(sums: ImportanceSums) -> dict[Criterion, np.ndarray]:
    """Each measurable criterion as (..., L, E) from the sums (over domains or one domain)."""
    counts = sums.counts.astype(np.float64)
    assignments = counts.sum(axis=-1, keepdims=True)  # A per layer
    per_a = np.divide(1.0, assignments, out=np.zeros_like(assignments), where=assignments > 0)
    out = {Criterion.FREQUENCY: counts * per_a}
    if sums.weight is not None:
        out[Criterion.WEIGHTED] = sums.weight * per_a
    if sums.reap is not None:
        out[Criterion.REAP] = np.divide(sums.reap, counts, out=np.zeros_like(counts), where=counts > 0)
    return out


def trace_sums(trace: Trace, rows: int = 1 << 18, progress: bool = False) -> ImportanceSums:
    """The sums over a whole trace, streamed chunk by chunk."""
    from routelens.progress import progress_bar

    columns = [c for c in ("weights", "expert_norms") if trace.has(c)]
    D, L, E = len(trace.domains), len(trace.layers), trace.num_ids
    sums = ImportanceSums(
        np.zeros((D, L, E), np.int64),
        np.zeros((D, L, E)) if "weights" in columns else None,
        np.zeros((D, L, E)) if {"weights", "expert_norms"} <= set(columns) else None,
        np.zeros(D, np.int64),
    )
    with progress_bar(not progress) as bar:
        task = bar.add_task("importance", total=trace.num_tokens, status="")
        for chunk in trace.iter_chunks(columns=columns, rows=rows):
            sums += importance_sums(
                chunk.experts, chunk.domain, E, D, chunk.weights, getattr(chunk, "expert_norms", None)
            )
            bar.update(task, advance=len(chunk))
    return sums


def _by_layer(values: np.ndarray, layers: list[str], digits: int = 6) -> dict[str, list[float]]:
    return {name: [round(float(v), digits) for v in row] for name, row in zip(layers, values)}


def _block(sums: ImportanceSums, layers: list[str]) -> dict:
    scores = importance_scores(sums)
    out = {str(c): _by_layer(v, layers) for c, v in scores.items()}
    out["assignments"] = {name: [int(v) for v in row] for name, row in zip(layers, sums.counts)}
    out["tokens"] = int(sums.tokens)
    return out


def expert_importance(trace: Trace | str | os.PathLike, config: ImportanceConfig | None = None, **overrides) -> dict:
    """Importance of every expert of every MoE layer of `trace`, overall and per domain.

    Keys: meta (trace, model, family, layers, num_experts, top_k, tokens, domains, criteria),
    overall and domains[name], each {criterion: {layer: [E values]}, assignments: {layer: [E counts]}, tokens}.
    `reap` is present only for a trace with `expert_norms` (`routelens trace --store-expert-norms`),
    `weighted` only for one with weights.
    """
    config = build_config(ImportanceConfig, config, overrides)
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    if trace.num_tokens == 0:
        raise RoutelensError(f"the trace at {trace.path} holds no tokens; trace some text first.")
    sums = trace_sums(trace, config.rows, config.progress)
    layers = [str(x) for x in trace.layers]
    overall = sums.of_domain(None)
    domains = {name: _block(sums.of_domain(d), layers) for d, name in enumerate(trace.domains)}
    return {
        "meta": {
            "trace": str(trace.path),
            "model": trace.manifest.get("model", {}).get("name_or_path"),
            "family": trace.manifest.get("family"),
            "layers": layers,
            "num_experts": trace.num_experts,  # routed experts
            "num_ids": trace.num_ids,  # + zero-computation experts: the width of every per-expert array
            "top_k": trace.top_k,
            "tokens": trace.num_tokens,
            "domains": list(trace.domains),
            "criteria": [str(c) for c in importance_scores(overall)],
        },
        "overall": _block(overall, layers),
        "domains": domains,
    }


def scores_of(result: dict, criterion: Criterion, domain: str | None = None) -> np.ndarray:
    """(L, E) scores of `criterion` from an `expert_importance` result, overall or on one domain."""
    criterion = Criterion(criterion)
    if domain is not None and domain not in result["domains"]:
        raise RoutelensError(
            f"--domain {domain!r} is not a domain of the trace; its domains are {', '.join(result['domains'])}."
        )
    block = result["overall"] if domain is None else result["domains"][domain]
    if str(criterion) not in block:
        why = (
            "trace with `routelens trace --store-expert-norms`" if criterion is Criterion.REAP else "trace with weights"
        )
        raise RoutelensError(
            f"criterion {criterion} needs what this trace did not store; {why}, or use --criterion frequency."
        )
    return np.array([block[str(criterion)][name] for name in result["meta"]["layers"]], dtype=np.float64)


def check_importance(result: dict, trace: Trace, source: str = "the importance result") -> dict:
    """`result` if it is an `expert_importance` result of `trace` (same layers, experts, top-k and
    tokens); else a one-line refusal naming `source` and the command that writes the right one."""
    meta = result.get("meta") if isinstance(result, dict) else None
    if not isinstance(meta, dict) or not isinstance(result.get("overall"), dict):
        raise RoutelensError(
            f"{source} holds no expert importance; write it with `routelens importance {trace.path} --json FILE`."
        )
    mine = {
        "layers": [str(x) for x in trace.layers],
        "num_experts": trace.num_experts,
        "top_k": trace.top_k,
        "tokens": trace.num_tokens,
    }
    for key, value in mine.items():
        theirs = [str(x) for x in meta.get(key, [])] if key == "layers" else meta.get(key)
        if theirs != value:
            raise RoutelensError(
                f"{source} has {key}={theirs} but the trace at {trace.path} has {key}={value}; "
                f"write it with `routelens importance {trace.path} --json FILE`."
            )
    return result
