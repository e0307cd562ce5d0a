"""Router saturation (OLMoE): how early in training does each layer's router settle?

Given traces of several checkpoints of one model over the same corpus, the last being the
final checkpoint, for every checkpoint t and layer: the mean share of a token's top-k at t that
is also in its top-k at the final checkpoint, and the share whose first choice is the same.
Rows are aligned by (doc_id, position). The final checkpoint's keys and top-k masks are held in
memory (tokens x layers x k bytes); the other checkpoints stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routelens.analysis.pairs import popcount, topk_mask
from routelens.config import build_config
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace


def _row_key(doc_id: np.ndarray, position: np.ndarray) -> np.ndarray:
    return doc_id.astype(np.int64) * (1 << 32) + position.astype(np.int64)


def _check_same_model(traces: Sequence[Trace]) -> None:
    final = traces[-1]
    for tr in traces[:-1]:
        for name in ("layers", "num_experts", "top_k"):
            if getattr(tr, name) != getattr(final, name):
                raise RoutelensError(
                    f"checkpoint trace {tr.path} has {name}={getattr(tr, name)} but the final one {final.path} has "
                    f"{getattr(final, name)}; pass traces of checkpoints of one model."
                )


@dataclass
class SaturationConfig:
    labels: tuple[str, ...] | None = None  # one per trace; None: the trace folders' names
    rows: int = 1 << 20  # rows per chunk read at once
    progress: bool = True

    def __post_init__(self):
        self.labels = None if self.labels is None else tuple(str(label) for label in self.labels)
        if self.rows < 1:
            raise RoutelensError(f"rows={self.rows} must be at least 1.")


def router_saturation(traces: Sequence[Trace | str], config: SaturationConfig | None = None, **overrides) -> dict:
    """Per layer, agreement of each checkpoint's routing with the final checkpoint's (the last
    trace); keyword overrides set SaturationConfig fields. See docs/analysis-json.md for the keys."""
    config = build_config(SaturationConfig, config, overrides)
    labels, rows, progress = config.labels, config.rows, config.progress
    traces = [open_trace(t) if not isinstance(t, Trace) else t for t in traces]
    if len(traces) < 2:
        raise RoutelensError(f"router saturation needs at least 2 checkpoint traces, got {len(traces)}; pass the final one last.")
    if labels is not None and len(labels) != len(traces):
        raise RoutelensError(f"{len(labels)} labels for {len(traces)} traces; give one label per trace.")
    _check_same_model(traces)
    labels = list(labels) if labels is not None else [t.path.name for t in traces]
    final = traces[-1]
    E, k, L = final.num_experts, final.top_k, len(final.layers)

    keys, firsts, masks = [], [], []
    for chunk in final.iter_chunks(rows=rows):
        keys.append(_row_key(chunk.doc_id, chunk.position))
        firsts.append(chunk.experts[:, :, 0].copy())
        masks.append(topk_mask(chunk.experts, E))
    if not keys:
        raise RoutelensError(f"the final checkpoint trace {final.path} holds no tokens.")
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    key = key[order]
    first_final = np.concatenate(firsts)[order]  # (n, L)
    mask_final = np.concatenate(masks)[order]  # (n, L, W)

    from routelens.progress import progress_bar

    topk = np.zeros((len(traces), L))
    top1 = np.zeros((len(traces), L))
    matched = np.zeros(len(traces), dtype=np.int64)
    with progress_bar(not progress) as bar:
        task = bar.add_task("saturation", total=sum(t.num_tokens for t in traces[:-1]), status="")
        for c, tr in enumerate(traces[:-1]):
            overlap = np.zeros(L)
            same = np.zeros(L)
            for chunk in tr.iter_chunks(rows=rows):
                ck = _row_key(chunk.doc_id, chunk.position)
                at = np.minimum(np.searchsorted(key, ck), len(key) - 1)
                hit = key[at] == ck
                at = at[hit]
                mask = topk_mask(chunk.experts[hit], E)
                both = popcount(mask & mask_final[at]).sum(axis=2)  # (m, L)
                overlap += both.sum(axis=0)
                same += (chunk.experts[hit, :, 0] == first_final[at]).sum(axis=0)
                matched[c] += int(hit.sum())
                bar.advance(task, len(chunk))
            if matched[c] == 0:
                raise RoutelensError(
                    f"no row of {tr.path} matches the final checkpoint {final.path} by (doc_id, position); "
                    "trace every checkpoint over the same corpus."
                )
            topk[c] = overlap / (matched[c] * k)
            top1[c] = same / matched[c]
    topk[-1] = top1[-1] = 1.0
    matched[-1] = len(key)
    names = [str(layer) for layer in final.layers]
    return {
        "checkpoints": labels,
        "tokens": matched.tolist(),
        "layers": list(final.layers),
        "topk": {name: topk[:, i].tolist() for i, name in enumerate(names)},
        "top1": {name: top1[:, i].tolist() for i, name in enumerate(names)},
        "baseline": {"topk": k / E, "top1": 1.0 / E},
    }
