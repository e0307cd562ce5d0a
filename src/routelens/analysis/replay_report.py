"""What a routing mismatch costs: a model run on a trace's documents with its own routing and with the
trace's routing replayed (`routelens replay MODEL --trace ROUTING --out REPORT.json`).

Each document is teacher-forced over its own tokens in the trace's windows (`seq_len`; an imported
trace's whole requests), `batch_size` windows per pass, right-padded. Per pass the model runs twice:
with its own routing (observed at its expert-selection top-k, `observing_selection`, which also
gives the selection margin: k-th minus (k+1)-th selection score, bias included) and with the trace's
routing replayed (`routelens.replay`). Per domain and layer:

  routing_differs    share of token-layers whose expert set differs from the trace's
  any_layer_differs  share of tokens that differ in at least one layer (as `compare` names it)
  delta_logprob      replayed - own log-probability of the trace's own next token (mean, p50, p99)
  kl                 KL(own || replayed) of the next-token distributions (mean, p99)
  by_margin          ten equal-count bins of the own selection margin, pooled over domains: their
                     edges, token-layers, share differing, and the mean delta_logprob and kl of the
                     tokens holding them

Domains include the pooled `all`; layers are decoder indices as strings. A token whose next token
lies outside its window (a window's last token) has no next-token numbers and is left out of
delta_logprob and kl; every token with a row is in the routing shares. Tokens of one pass share each
expert's matmul, whose rounding depends on how many rows it gets: a flip in one window moves the
numbers of the other windows of its batch by float rounding (~1e-7); `batch_size=1` keeps them apart.
A trace of another model (MoE layers, E, k) or vocabulary is refused in one line. With `out`, the
rows done so far are kept after every batch in `OUT.partial.npz` (atomically); the same replay run
again resumes after them, and the checkpoint goes once the report is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace

MARGIN_BINS = 10
COLUMNS = ("doc_id", "domain", "position", "token_id", "experts")


@dataclass
class _Rows:
    """Per trace row: routing differs per layer, own margin per layer, next-token delta and kl."""

    differs: np.ndarray  # (n, L) bool
    margin: np.ndarray  # (n, L) float32
    delta: np.ndarray  # (n,) float64, NaN where the token has no next token in its window
    kl: np.ndarray  # (n,) float64, NaN alike


def _windows(doc_id: np.ndarray, position: np.ndarray, seq_len: int) -> list[tuple[int, int]]:
    """(start, stop) rows of each window: a document's rows cut where position // seq_len changes
    (the trace's own cut; seq_len 0 or less: whole documents)."""
    n = len(doc_id)
    if n == 0:
        return []
    piece = position // seq_len if seq_len > 0 else np.zeros_like(position)
    cut = np.flatnonzero((doc_id[1:] != doc_id[:-1]) | (piece[1:] != piece[:-1])) + 1
    bounds = np.concatenate([[0], cut, [n]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _check(trace: Trace, spec, vocab_size: int, tokens: np.ndarray) -> None:
    mine = (list(spec.moe_layers), spec.num_experts, spec.top_k, spec.num_zero_experts)
    theirs = (trace.layers, trace.num_experts, trace.top_k, trace.num_zero_experts)
    if mine != theirs:
        raise RoutelensError(
            f"the trace at {trace.path} routes MoE layers {theirs[0]} among {theirs[1]} experts, top-{theirs[2]}, "
            f"but the model has layers {mine[0]}, {mine[1]} experts, top-{mine[2]}; replay a trace of this model."
        )
    declared = (trace.manifest.get("tokenizer") or {}).get("vocab_size")
    top = int(tokens.max()) if len(tokens) else -1
    if top >= vocab_size or (isinstance(declared, int) and declared > vocab_size):
        raise RoutelensError(
            f"the trace at {trace.path} holds token ids up to {max(top, (declared or 0) - 1)} but the model's vocabulary "
            f"has {vocab_size}; replay a trace of this model's tokenizer."
        )


def _load(model):
    """(model, its float32 text vocabulary size) from a loaded module or a path / hub id."""
    import torch

    if isinstance(model, (str, os.PathLike)):
        from routelens.models.loading import load_model

        settings = SimpleNamespace(
            device="cpu",
            dtype="float32",
            device_map=None,
            max_memory=None,
            offload_folder=None,
            trust_remote_code=False,
        )
        model, _ = load_model(model, settings)
    if not isinstance(model, torch.nn.Module):
        raise RoutelensError(f"replay_report needs a model path or a loaded model, not {type(model).__name__}.")
    from routelens.models.families import text_config

    return model, int(text_config(model).vocab_size)


def _batch_rows(model, chunk, windows, spec):
    """Run one batch of windows with own and replayed routing; the rows' numbers (`_Rows`)."""
    import torch

    from routelens.models.replay import observing_selection, replay

    B, width, L, K = len(windows), max(b - a for a, b in windows), len(spec.moe_layers), spec.top_k
    ids = torch.zeros(B, width, dtype=torch.long)
    mask = torch.zeros(B, width, dtype=torch.long)
    forced = torch.full((B, width, L, K), -1, dtype=torch.long)
    for i, (a, b) in enumerate(windows):
        ids[i, : b - a] = torch.from_numpy(chunk.token_id[a:b].astype(np.int64))
        mask[i, : b - a] = 1
        forced[i, : b - a] = torch.from_numpy(chunk.experts[a:b].astype(np.int64))
    with torch.no_grad():
        with observing_selection(model) as seen:
            own = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        # where the trace's set is the own set, replay it in the own order: the same routing, summed alike
        for s in range(L):
            k = spec.top_k_per_layer[s]
            mine = seen[s][-1][0].reshape(B, width, -1)[..., :k].long()
            same = (mine.sort(-1).values == forced[..., s, :k].sort(-1).values).all(-1, keepdim=True)
            forced[..., s, :k] = torch.where(same & (forced[..., s, :k] >= 0), mine, forced[..., s, :k])
        with replay(model, forced, attention_mask=mask):
            replayed = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    sites_k = spec.top_k_per_layer
    own_ids = [seen[s][-1][0].reshape(B, width, -1) for s in range(L)]
    margins = [seen[s][-1][1].reshape(B, width) for s in range(L)]
    lp_own, lp_rep = own.log_softmax(-1), replayed.log_softmax(-1)
    nxt = torch.zeros(B, width, dtype=torch.long)
    nxt[:, :-1] = ids[:, 1:]
    has_next = torch.zeros(B, width, dtype=torch.bool)
    has_next[:, :-1] = (mask[:, 1:] == 1) & (mask[:, :-1] == 1)
    delta = (lp_rep.gather(-1, nxt[..., None]) - lp_own.gather(-1, nxt[..., None]))[..., 0].double()
    kl = (lp_own.exp() * (lp_own - lp_rep)).sum(-1).double()
    delta, kl = delta.masked_fill(~has_next, float("nan")), kl.masked_fill(~has_next, float("nan"))
    keep = mask.bool()
    differs = torch.stack(
        [
            (own_ids[s][..., : sites_k[s]].sort(-1).values != forced[..., s, : sites_k[s]].sort(-1).values).any(-1)
            for s in range(L)
        ],
        -1,
    )
    return _Rows(
        differs[keep].numpy(), torch.stack(margins, -1)[keep].float().numpy(), delta[keep].numpy(), kl[keep].numpy()
    )


def _stats(values: np.ndarray, keys: tuple[str, ...]) -> dict:
    v = values[np.isfinite(values)]
    if not len(v):
        return dict.fromkeys(keys)
    out = {"mean": float(v.mean()), "p50": float(np.quantile(v, 0.5)), "p99": float(np.quantile(v, 0.99))}
    return {k: out[k] for k in keys}


def _by_margin(rows: _Rows) -> dict:
    """Ten equal-count bins of the finite own margins (edges from their quantiles)."""
    margin = rows.margin.reshape(-1)
    differs = rows.differs.reshape(-1)
    L = rows.margin.shape[1]
    delta, kl = np.repeat(rows.delta, L), np.repeat(rows.kl, L)
    ok = np.isfinite(margin)
    margin, differs, delta, kl = margin[ok], differs[ok], delta[ok], kl[ok]
    if not len(margin):
        return {"edges": [], "token_layers": [], "routing_differs": [], "delta_logprob": [], "kl": []}
    edges = np.quantile(margin.astype(np.float64), np.linspace(0, 1, MARGIN_BINS + 1))
    idx = np.clip(np.searchsorted(edges, margin, side="right") - 1, 0, MARGIN_BINS - 1)

    def mean(values, i):
        v = values[(idx == i) & np.isfinite(values)]
        return float(v.mean()) if len(v) else None

    counts = np.bincount(idx, minlength=MARGIN_BINS)
    return {
        "edges": [float(e) for e in edges],
        "token_layers": counts.tolist(),
        "routing_differs": [float(differs[idx == i].mean()) if counts[i] else None for i in range(MARGIN_BINS)],
        "delta_logprob": [mean(delta, i) for i in range(MARGIN_BINS)],
        "kl": [mean(kl, i) for i in range(MARGIN_BINS)],
    }


def _per_document(doc_id: np.ndarray, rows: _Rows) -> dict:
    out = {}
    starts = np.flatnonzero(np.concatenate([[True], doc_id[1:] != doc_id[:-1]]))
    for a, b in zip(starts, np.concatenate([starts[1:], [len(doc_id)]])):
        delta, kl = np.abs(rows.delta[a:b]), rows.kl[a:b]
        out[str(int(doc_id[a]))] = {
            "flips": int(rows.differs[a:b].sum()),
            "max_abs_delta_logprob": float(np.nanmax(delta)) if np.isfinite(delta).any() else 0.0,
            "max_kl": float(np.nanmax(kl)) if np.isfinite(kl).any() else 0.0,
        }
    return out


def _assemble(trace: Trace, domain: np.ndarray, rows: _Rows) -> dict:
    groups = [(name, domain == i) for i, name in enumerate(trace.domains)] + [("all", np.ones_like(domain, bool))]
    groups = [(name, where) for name, where in groups if where.any()]
    layers = [str(layer) for layer in trace.layers]
    return {
        "trace": str(trace.path),
        "tokens": int(len(domain)),
        "routing_differs": {
            name: {layer: float(rows.differs[where, s].mean()) for s, layer in enumerate(layers)}
            for name, where in groups
        },
        "any_layer_differs": {name: float(rows.differs[where].any(-1).mean()) for name, where in groups},
        "delta_logprob": {name: _stats(rows.delta[where], ("mean", "p50", "p99")) for name, where in groups},
        "kl": {name: _stats(rows.kl[where], ("mean", "p99")) for name, where in groups},
        "by_margin": _by_margin(rows),
    }


def replay_report(
    model,
    trace: Trace | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    batch_size: int | None = None,
    progress: bool = True,
    per_document: bool = False,
) -> dict:
    """`routelens replay`: run `model` (a path, hub id or loaded model) over the documents of `trace`
    with its own routing and with the trace's routing replayed; return the report (module docstring)
    and write it as JSON to `out` where given. `batch_size` defaults to the trace's own; `per_document`
    adds `per_document` {doc_id: {flips, max_abs_delta_logprob, max_kl}} (token-layers differing, and
    the largest cost on the document's tokens)."""
    from routelens.lock import output_lock
    from routelens.models.families import describe_model
    from routelens.progress import progress_bar

    tr = trace if isinstance(trace, Trace) else open_trace(trace)
    if out is not None:
        from routelens.atomic import check_json_target

        check_json_target(out, what="--out", example="replay.json")
    size = batch_size if batch_size is not None else int(tr.manifest.get("batch_size") or 8)
    if size < 1:
        raise RoutelensError(f"batch_size {size} is not positive; pass a batch size of at least 1.")
    model, vocab_size = _load(model)
    spec = describe_model(model)
    chunk = tr.load(list(COLUMNS))
    _check(tr, spec, vocab_size, chunk.token_id)
    windows = _windows(chunk.doc_id, chunk.position, int(tr.manifest.get("seq_len") or 0))
    identity = f"{Path(tr.path).resolve()}|{tr.num_tokens}|{len(windows)}|{size}|{spec.family}|{spec.moe_layers}"
    checkpoint = None if out is None else Path(f"{out}.partial.npz")
    parts, done = _resumed(checkpoint, identity)
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("replay", total=len(windows), completed=done, status="")
        for start in range(done, len(windows), size):
            batch = windows[start : start + size]
            parts.append(_batch_rows(model, chunk, batch, spec))
            bar.update(task, advance=len(batch))
            if checkpoint is not None:
                parts = [_joined(parts)]
                _save(checkpoint, identity, parts[0], start + len(batch))
    rows = _joined(parts)
    # rows come back window by window in trace order, which is the chunk's row order
    report = _assemble(tr, chunk.domain, rows)
    if per_document:
        report["per_document"] = _per_document(chunk.doc_id, rows)
    if out is not None:
        from routelens.atomic import write_json

        with output_lock(Path(out), what="replay"):
            write_json(out, report, indent=2, newline=True, what="--out", allow_nan=False)
            checkpoint.unlink(missing_ok=True)
    return report


def _joined(parts: list[_Rows]) -> _Rows:
    return _Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("differs", "margin", "delta", "kl")))


def _save(checkpoint: Path, identity: str, rows: _Rows, windows: int) -> None:
    """The rows of the first `windows` windows, written atomically beside the report (a resumed run
    starts after them)."""
    import io

    from routelens.atomic import write_bytes

    buf = io.BytesIO()
    np.savez(
        buf,
        identity=np.array(identity),
        windows=np.array(windows),
        differs=rows.differs,
        margin=rows.margin,
        delta=rows.delta,
        kl=rows.kl,
    )
    write_bytes(checkpoint, buf.getvalue())


def _resumed(checkpoint: Path | None, identity: str) -> tuple[list[_Rows], int]:
    """(rows, windows done) of an interrupted run of the same replay (trace, batching, model family),
    else nothing: a checkpoint of another run is started over."""
    if checkpoint is None or not checkpoint.is_file():
        return [], 0
    try:
        with np.load(checkpoint, allow_pickle=False) as data:
            if str(data["identity"]) != identity:
                return [], 0
            rows = _Rows(data["differs"], data["margin"], data["delta"], data["kl"])
            return [rows], int(data["windows"])
    except (OSError, ValueError, KeyError):
        return [], 0
