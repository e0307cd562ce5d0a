"""Comparing the routing of two traces of the same tokens: how often do A and B send a token to the
same experts? (float32 vs bfloat16, an engine's routing vs Hugging Face's, base vs fine-tuned.)

Rows are aligned by document and position, and their token ids must agree; a trace may have a
document's last rows that the other lacks (an engine never runs the last generated token), which
are counted as `unmatched`, but a document in one trace only, or a token id that differs, is
refused. Per domain (of A) and layer, over the aligned token-layers:

    first      share whose first choice is the same expert
    overlap    mean |top-k of A ∩ top-k of B| / k
    set_equal  share whose top-k sets are equal (order aside)

and `any_layer_differs`, the share of tokens whose top-k set differs in at least one layer. The
flip rate against the router's margin (`by_margin`) needs scores: with router probabilities
(`--store-probs`) the margin is p_(k) - p_(k+1), the gap between the last chosen expert and the
first one left out, against which a top-k set flips; with weights only it is w_1 - w_2, the gap
between the first two chosen weights, against which the *first choice* flips (the (k+1)-th score
is not recorded, so set flips cannot be binned). The margin is A's where A has the scores, else B's.

Everything is streamed chunk by chunk; the counting functions are pure (arrays in, arrays out).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from routelens.capture.agreement import MARGIN_EDGES, CompareCounts, router_margin, weight_margin
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, TraceChunk, open_trace

ALL = "all"  # key of the pooled domains (as in `analyze`)


# -- alignment ------------------------------------------------------------------------------------
def check_comparable(a: Trace, b: Trace) -> None:
    """Refuse two traces whose routing has another shape (layers, E, k)."""
    for name, x, y in (
        ("moe_layers", a.layers, b.layers),
        ("num_experts", a.num_experts, b.num_experts),
        ("num_zero_experts", a.num_zero_experts, b.num_zero_experts),
        ("top_k", a.top_k, b.top_k),
    ):
        if x != y:
            raise RoutelensError(
                f"the traces have {name} {x} ({a.path}) and {y} ({b.path}); compare traces of one "
                "model architecture over the same tokens."
            )


def aligned_blocks(
    a: Trace, b: Trace, columns_a=(), columns_b=(), rows: int = 1 << 18
) -> Iterator[tuple[TraceChunk, TraceChunk, int, int]]:
    """(rows of A, the same rows of B, A's unmatched rows, B's unmatched rows) per block of whole
    documents, streamed; refuses traces that are not of the same tokens."""
    it_a, it_b = a.iter_chunks(columns=list(columns_a), rows=rows), b.iter_chunks(columns=list(columns_b), rows=rows)
    buf_a = buf_b = None
    done_a = done_b = False
    while True:
        if not done_a:
            nxt = next(it_a, None)
            done_a = nxt is None
            buf_a = _append(buf_a, nxt)
        if not done_b:
            nxt = next(it_b, None)
            done_b = nxt is None
            buf_b = _append(buf_b, nxt)
        # Documents below the cut are whole in both buffers (a stream still running may continue its last one).
        cut = min(
            np.inf if done_a or buf_a is None else buf_a.doc_id[-1],
            np.inf if done_b or buf_b is None else buf_b.doc_id[-1],
        )
        head_a, buf_a = _split(buf_a, cut)
        head_b, buf_b = _split(buf_b, cut)
        if head_a is not None or head_b is not None:
            yield _align(head_a, head_b, a, b)
        if done_a and done_b and buf_a is None and buf_b is None:
            return


def _append(buf: TraceChunk | None, chunk: TraceChunk | None) -> TraceChunk | None:
    if chunk is None or len(chunk) == 0:
        return buf
    return chunk if buf is None else TraceChunk.concat([buf, chunk])


def _split(buf: TraceChunk | None, cut: float) -> tuple[TraceChunk | None, TraceChunk | None]:
    if buf is None:
        return None, None
    at = int(np.searchsorted(buf.doc_id, cut, side="left")) if np.isfinite(cut) else len(buf)
    head = buf.slice(0, at) if at else None
    rest = buf.slice(at, len(buf)) if at < len(buf) else None
    return head, rest


def _align(ca: TraceChunk | None, cb: TraceChunk | None, a: Trace, b: Trace) -> tuple[TraceChunk, TraceChunk, int, int]:
    docs_a, start_a, len_a = _runs(ca)
    docs_b, start_b, len_b = _runs(cb)
    if not np.array_equal(docs_a, docs_b):
        only = np.setxor1d(docs_a, docs_b)
        side = a.path if only[0] in docs_a else b.path
        raise RoutelensError(
            f"document {int(only[0])} is only in {side}; compare two traces of the same tokens "
            "(the same documents in the same order)."
        )
    common = np.minimum(len_a, len_b)
    keep_a, keep_b = _leading(start_a, len_a, common), _leading(start_b, len_b, common)
    ra, rb = _take(ca, keep_a), _take(cb, keep_b)
    for name in ("position", "token_id"):
        bad = np.flatnonzero(getattr(ra, name) != getattr(rb, name))
        if len(bad):
            i = bad[0]
            raise RoutelensError(
                f"the traces differ in {name.replace('_', ' ')} at document {int(ra.doc_id[i])}, row "
                f"{int(ra.position[i])} ({int(getattr(ra, name)[i])} in {a.path}, {int(getattr(rb, name)[i])} "
                f"in {b.path}); compare two traces of the same tokens."
            )
    return ra, rb, int((len_a - common).sum()), int((len_b - common).sum())


def _runs(chunk: TraceChunk | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document ids, first row, rows) of each document run in `chunk`."""
    if chunk is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, chunk.doc_id[1:] != chunk.doc_id[:-1]])
    lengths = np.diff(np.r_[starts, len(chunk)])
    return chunk.doc_id[starts], starts, lengths


def _leading(starts: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row indices of the first `keep[i]` rows of each run i."""
    if not len(starts):
        return np.zeros(0, np.int64)
    total = int(lengths.sum())
    rank = np.arange(total) - np.repeat(starts, lengths)
    return np.flatnonzero(rank < np.repeat(keep, lengths))


def _take(chunk: TraceChunk, index: np.ndarray) -> TraceChunk:
    return TraceChunk(**{name: (None if value is None else value[index]) for name, value in vars(chunk).items()})


# -- the comparison -------------------------------------------------------------------------------
def _margin_source(a: Trace, b: Trace) -> tuple[str | None, str | None]:
    """(which trace, which column) gives the margin: probs first, then weights (k >= 2)."""
    for column in ("probs", "weights"):
        for side, tr in (("a", a), ("b", b)):
            if tr.has(column) and (column == "probs" or tr.top_k >= 2):
                return side, column
    return None, None


def compare_traces(
    a: Trace | str | os.PathLike, b: Trace | str | os.PathLike, *, rows: int = 1 << 18, progress: bool = False
) -> dict:
    """The comparison of two traces of the same tokens (module docstring); JSON-ready."""
    from routelens.progress import progress_bar

    a = a if isinstance(a, Trace) else open_trace(a)
    b = b if isinstance(b, Trace) else open_trace(b)
    check_comparable(a, b)
    side, column = _margin_source(a, b)
    k = a.top_k
    counts = CompareCounts(len(a.domains), len(a.layers), k)
    unmatched = [0, 0]
    cols = {"a": [column] if side == "a" else [], "b": [column] if side == "b" else []}
    with progress_bar(not progress) as bar:
        task = bar.add_task("compare", total=a.num_tokens, status="")
        for ra, rb, ua, ub in aligned_blocks(a, b, cols["a"], cols["b"], rows=rows):
            unmatched[0] += ua
            unmatched[1] += ub
            margin = None
            if column is not None:
                scores = getattr(ra if side == "a" else rb, column)
                margin = router_margin(scores, k) if column == "probs" else weight_margin(scores)
            counts.update(ra.experts, rb.experts, ra.domain, margin, flip_of="set" if column == "probs" else "first")
            bar.advance(task, len(ra) + ua)
    if counts.tokens.sum() == 0:
        raise RoutelensError(
            f"the traces at {a.path} and {b.path} share no aligned token; compare traces of the same tokens."
        )
    return _assemble(a, b, counts, unmatched, side, column)


def _share(num, den):
    return None if den == 0 else float(num) / float(den)


def _assemble(a: Trace, b: Trace, c: CompareCounts, unmatched: list[int], side, column) -> dict:
    names = [str(x) for x in a.layers]
    domains = [*a.domains, ALL]
    tokens = np.r_[c.tokens, c.tokens.sum()]
    first, overlap, set_equal = (np.vstack([m, m.sum(0, keepdims=True)]) for m in (c.first, c.overlap, c.set_equal))
    differs = np.r_[c.differs, c.differs.sum()]
    agreement = {
        d: {
            layer: {
                "first": _share(first[i, j], tokens[i]),
                "overlap": _share(overlap[i, j], tokens[i] * c.top_k),
                "set_equal": _share(set_equal[i, j], tokens[i]),
            }
            for j, layer in enumerate(names)
        }
        for i, d in enumerate(domains)
        if tokens[i]
    }
    by_margin = None
    if column is not None:
        by_margin = {
            "source": column,
            "trace": side,
            "margin": "p_(k) - p_(k+1) of the router probabilities"
            if column == "probs"
            else "w_1 - w_2 of the chosen weights",
            "flip": "top-k set differs" if column == "probs" else "first choice differs",
            "edges": list(MARGIN_EDGES),
            "counts": c.margin_counts.tolist(),
            "flips": c.margin_flips.tolist(),
            "rate": [_share(f, n) for f, n in zip(c.margin_flips, c.margin_counts)],
        }
    return {
        "meta": {
            "a": str(a.path),
            "b": str(b.path),
            "layers": list(a.layers),
            "num_experts": a.num_experts,  # routed experts
            "num_ids": a.num_ids,  # + zero-computation experts
            "top_k": a.top_k,
            "domains": list(a.domains),
            "tokens": int(tokens[-1]),
            "tokens_per_domain": {d: int(tokens[i]) for i, d in enumerate(domains)},
            "unmatched": {"a": unmatched[0], "b": unmatched[1]},
            "models": {
                "a": (a.manifest.get("model") or {}).get("name_or_path"),
                "b": (b.manifest.get("model") or {}).get("name_or_path"),
            },
            "dtypes": {"a": a.manifest.get("dtype"), "b": b.manifest.get("dtype")},
        },
        "agreement": agreement,
        "any_layer_differs": {d: _share(differs[i], tokens[i]) for i, d in enumerate(domains) if tokens[i]},
        "by_margin": by_margin,
    }
