"""Router saturation (OLMoE): how early in training does each layer's router settle?

Given traces of several checkpoints of one model over the same corpus, the last being the
final checkpoint, for every checkpoint t and layer: the mean share of a token's top-k at t that
is also in its top-k at the final checkpoint, and the share whose first choice is the same.
Rows are aligned by (doc_id, position), and the traces must hold the same text there: a row
whose token id differs from the final checkpoint's is refused (traces of different corpora, or
of one corpus tokenized differently, would otherwise "agree" at chance level and look like an
unsettled router). The final checkpoint's keys, token ids and top-k masks are held in memory
(tokens x (12 + layers x k) bytes); the other checkpoints stream.

Beside the uniform-routing line (k/E, 1/E) comes a load-matched chance line: the agreement two
routings with the checkpoint's and the final model's expert loads would have if they were
independent, sum_e q_t(e) q_final(e) for the first choice and k sum_e q_t(e) q_final(e) for the
top-k overlap share (q: the share of assignments per expert, over the aligned rows). A router
that sends most tokens to the same few experts at both checkpoints agrees above 1/E by load alone.
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
        raise RoutelensError(
            f"router saturation needs at least 2 checkpoint traces, got {len(traces)}; pass the final one last."
        )
    if labels is not None and len(labels) != len(traces):
        raise RoutelensError(f"{len(labels)} labels for {len(traces)} traces; give one label per trace.")
    _check_same_model(traces)
    labels = list(labels) if labels is not None else [t.path.name for t in traces]
    final = traces[-1]
    E, k, L = final.num_ids, final.top_k, len(final.layers)

    keys, firsts, masks, tokens = [], [], [], []
    for chunk in final.iter_chunks(rows=rows):
        keys.append(_row_key(chunk.doc_id, chunk.position))
        tokens.append(chunk.token_id.copy())
        firsts.append(chunk.experts[:, :, 0].copy())
        masks.append(topk_mask(chunk.experts, E))
    if not keys:
        raise RoutelensError(f"the final checkpoint trace {final.path} holds no tokens.")
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    key = key[order]
    first_final = np.concatenate(firsts)[order]  # (n, L)
    mask_final = np.concatenate(masks)[order]  # (n, L, W)
    token_final = np.concatenate(tokens)[order]  # (n,)

    from routelens.progress import progress_bar

    topk = np.zeros((len(traces), L))
    top1 = np.zeros((len(traces), L))
    matched = np.zeros(len(traces), dtype=np.int64)
    chance_topk = np.zeros((len(traces), L))
    chance_top1 = np.zeros((len(traces), L))
    with progress_bar(not progress) as bar:
        task = bar.add_task("saturation", total=sum(t.num_tokens for t in traces[:-1]), status="")
        for c, tr in enumerate(traces[:-1]):
            overlap = np.zeros(L)
            same = np.zeros(L)
            loads = LoadCounts(L, E)  # (checkpoint, final) expert loads over the aligned rows
            for chunk in tr.iter_chunks(rows=rows):
                ck = _row_key(chunk.doc_id, chunk.position)
                at = np.minimum(np.searchsorted(key, ck), len(key) - 1)
                hit = key[at] == ck
                at = at[hit]
                _check_tokens(tr, final, chunk, hit, token_final[at])
                loads.add(chunk.experts[hit], first_final[at], mask_final[at])
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
            chance_topk[c], chance_top1[c] = loads.chance(k)
    topk[-1] = top1[-1] = 1.0
    chance_topk[-1], chance_top1[-1] = final_self_chance(first_final, mask_final, E, k)
    matched[-1] = len(key)
    names = [str(layer) for layer in final.layers]
    return {
        "checkpoints": labels,
        "tokens": matched.tolist(),
        "layers": list(final.layers),
        "topk": {name: topk[:, i].tolist() for i, name in enumerate(names)},
        "top1": {name: top1[:, i].tolist() for i, name in enumerate(names)},
        "baseline": {"topk": k / E, "top1": 1.0 / E},
        "baseline_matched": {
            "topk": {name: chance_topk[:, i].tolist() for i, name in enumerate(names)},
            "top1": {name: chance_top1[:, i].tolist() for i, name in enumerate(names)},
        },
    }


def _check_tokens(tr: Trace, final: Trace, chunk, hit: np.ndarray, final_tokens: np.ndarray) -> None:
    """Refuse aligned rows whose token ids differ: the traces are not of the same text."""
    bad = np.flatnonzero(chunk.token_id[hit] != final_tokens)
    if len(bad):
        i = np.flatnonzero(hit)[bad[0]]
        raise RoutelensError(
            f"{tr.path} and the final checkpoint {final.path} hold different tokens at doc_id {int(chunk.doc_id[i])}, "
            f"position {int(chunk.position[i])} (token {int(chunk.token_id[i])} vs {int(final_tokens[bad[0]])}; "
            f"{len(bad)} such rows in one chunk); trace every checkpoint over the same corpus with the same tokenizer."
        )


class LoadCounts:
    """Expert loads of a checkpoint and of the final model over the same aligned rows."""

    def __init__(self, num_layers: int, num_experts: int):
        self.E = num_experts
        self.first = np.zeros((2, num_layers, num_experts))  # (checkpoint | final, L, E) first choices
        self.any = np.zeros((2, num_layers, num_experts))  # assignments over the top-k

    def add(self, experts: np.ndarray, first_final: np.ndarray, mask_final: np.ndarray) -> None:
        """experts (m, L, k) of the checkpoint; first_final (m, L) and mask_final (m, L, W) of the final."""
        for layer in range(experts.shape[1]):
            self.first[0, layer] += np.bincount(experts[:, layer, 0], minlength=self.E)
            self.first[1, layer] += np.bincount(first_final[:, layer], minlength=self.E)
            self.any[0, layer] += np.bincount(experts[:, layer].ravel(), minlength=self.E)
        self.any[1] += _mask_counts(mask_final, self.E)

    def chance(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(topk, top1) agreement of independent routings with these loads, (L,) each."""
        with np.errstate(invalid="ignore", divide="ignore"):
            q = self.any / self.any.sum(-1, keepdims=True)  # share of assignments, sums to 1
            p = self.first / self.first.sum(-1, keepdims=True)
        # E|S_t ∩ S_f| = sum_e P(e in S_t) P(e in S_f) = sum_e (k q_t)(k q_f); divided by k.
        return k * (q[0] * q[1]).sum(-1), (p[0] * p[1]).sum(-1)


def _mask_counts(mask: np.ndarray, num_experts: int) -> np.ndarray:
    """(m, L, W) top-k bitmasks -> (L, E) number of rows with each expert set."""
    out = np.zeros((mask.shape[1], num_experts))
    for e in range(num_experts):
        word, bit = divmod(e, mask.dtype.itemsize * 8)
        out[:, e] = ((mask[:, :, word] >> mask.dtype.type(bit)) & mask.dtype.type(1)).sum(axis=0)
    return out


def final_self_chance(
    first_final: np.ndarray, mask_final: np.ndarray, num_experts: int, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The load-matched chance line of the final checkpoint against itself (the last column)."""
    loads = LoadCounts(first_final.shape[1], num_experts)
    loads.first[0] = loads.first[1] = np.stack(
        [np.bincount(first_final[:, i], minlength=num_experts) for i in range(first_final.shape[1])]
    )
    loads.any[0] = loads.any[1] = _mask_counts(mask_final, num_experts)
    return loads.chance(top_k)
