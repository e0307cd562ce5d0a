"""Token view (Mixtral Fig. 8): text coloured by each token's first-choice expert, per layer.

`collect_samples` streams the trace until it holds the first `max_tokens` tokens of the first
`docs_per_domain` documents of every domain, passing over very short ones (it stops early once
all are complete, so a large trace is not read to its end). `render_token_view` writes one block per layer and document:
each token a `<span>` whose background is its first expert's colour and whose title (the
browser's tooltip) lists the top-k experts and their weights. Whitespace is kept as it is
(`white-space: pre-wrap`) so indentation shows; all text is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from routelens.errors import RoutelensError
from routelens.report.colors import expert_colors, tint
from routelens.report.html import esc
from routelens.store import Trace


@dataclass
class DocSample:
    """The first tokens of one document, at the chosen layers."""

    domain: str
    doc_id: int
    token_id: np.ndarray  # (n,) int32
    experts: np.ndarray  # (n, layers, k), layers = the chosen ones, in the order asked
    weights: np.ndarray | None  # (n, layers, k) or None when the trace has no weights


@dataclass
class _Pending:
    domain: str
    doc_id: int
    parts: list = field(default_factory=list)  # (token_id, experts, weights) slices
    rows: int = 0
    closed: bool = False


def layer_columns(trace: Trace, layers: Sequence[int]) -> list[int]:
    """Positions on the trace's layer axis of the true layer indices `layers`."""
    bad = [layer for layer in layers if layer not in trace.layers]
    if bad:
        raise RoutelensError(
            f"--layers {','.join(map(str, bad))}: not a MoE layer of this trace; "
            f"choose among {','.join(map(str, trace.layers))}."
        )
    return [trace.layers.index(layer) for layer in layers]


def collect_samples(
    trace: Trace,
    layers: Sequence[int],
    *,
    docs_per_domain: int = 2,
    max_tokens: int = 160,
    min_tokens: int | None = None,
    rows: int = 1 << 16,
) -> list[DocSample]:
    """The first `max_tokens` tokens of the first `docs_per_domain` documents of each domain.

    Documents shorter than `min_tokens` (default: min(max_tokens, 32)) are passed over while
    longer ones follow, since a title line shows little of the routing; they fill in only
    where a domain has too few long documents.
    """
    cols = layer_columns(trace, layers)
    min_tokens = min(max_tokens, 32 if min_tokens is None else min_tokens)  # filling max_tokens is long enough
    with_weights = trace.has("weights")
    picked: dict[int, list[_Pending]] = {d: [] for d in range(len(trace.domains))}
    short: dict[int, list[_Pending]] = {d: [] for d in range(len(trace.domains))}

    def close(d: int, p: _Pending) -> None:
        p.closed = True
        if p.rows < min_tokens:
            picked[d].remove(p)
            short[d].append(p)

    def complete() -> bool:
        return all(len(p) == docs_per_domain and all(x.closed for x in p) for p in picked.values())

    def close_open(keep: int | None) -> None:
        for d, pending_list in picked.items():
            for p in [p for p in pending_list if not p.closed and p.doc_id != keep]:
                close(d, p)

    for chunk in trace.iter_chunks(columns=["weights"] if with_weights else None, rows=rows):
        # Rows come by document: an open one that does not go on at the start of this chunk has ended.
        close_open(int(chunk.doc_id[0]))
        for d in map(int, np.unique(chunk.domain)):
            in_domain = np.flatnonzero(chunk.domain == d)
            docs = chunk.doc_id[in_domain]
            _, first_seen = np.unique(docs, return_index=True)
            for doc in docs[np.sort(first_seen)]:  # documents of this domain, in trace order
                pending = next((p for p in picked[d] if p.doc_id == doc), None)
                if pending is None:
                    if len(picked[d]) == docs_per_domain:
                        break
                    pending = _Pending(trace.domains[d], int(doc))
                    picked[d].append(pending)
                if pending.closed:
                    continue
                rows_of_doc = in_domain[docs == doc][: max_tokens - pending.rows]
                pending.parts.append(
                    (
                        chunk.token_id[rows_of_doc],
                        chunk.experts[rows_of_doc][:, cols],
                        chunk.weights[rows_of_doc][:, cols] if with_weights else None,
                    )
                )
                pending.rows += len(rows_of_doc)
                if pending.rows >= max_tokens:
                    pending.closed = True
                elif doc != docs[-1]:  # a later document of this chunk follows it
                    close(d, pending)
        if complete():
            break
    close_open(None)  # the trace has ended
    samples = []
    for d in picked:
        chosen = picked[d] + short[d][: docs_per_domain - len(picked[d])]
        for p in sorted(chosen, key=lambda p: p.doc_id):
            tok, exp, wts = zip(*p.parts)
            samples.append(
                DocSample(
                    p.domain,
                    p.doc_id,
                    np.concatenate(tok),
                    np.concatenate(exp),
                    np.concatenate(wts) if with_weights else None,
                )
            )
    return samples


def token_text(vocab: Sequence[str], token_id: int) -> str:
    """Display string of a token, or `⟨id⟩` when the vocabulary does not know it."""
    if 0 <= token_id < len(vocab) and vocab[token_id] != "":
        return vocab[token_id]
    return f"\u27e8{token_id}\u27e9"


def _span(text: str, token_id: int, experts: np.ndarray, weights: np.ndarray | None, layer: int, colors) -> str:
    choices = " · ".join(
        f"e{int(e)}" + ("" if weights is None else f" {float(w):.2f}")
        for e, w in zip(experts, weights if weights is not None else [None] * len(experts))
    )
    title = f"{text!r} (id {token_id})\nlayer {layer}: {choices}"
    newline = " nl" if text.endswith("\n") else ""
    return f'<span class="tok{newline}" style="background:{colors[int(experts[0])]}" title="{esc(title)}">{esc(text)}</span>'


def legend(num_experts: int) -> str:
    colors = [tint(c) for c in expert_colors(num_experts)]
    chips = "".join(f'<span class="chip" style="background:{c}">{e}</span>' for e, c in enumerate(colors))
    return f'<div class="tv-legend"><b>First-choice expert:</b> {chips}</div>'


def render_token_view(
    samples: Sequence[DocSample], layers: Sequence[int], vocab: Sequence[str], num_experts: int
) -> str:
    """HTML of the token view: a legend, then per document one block per layer."""
    colors = [tint(c) for c in expert_colors(num_experts)]
    out = [legend(num_experts)]
    domain = None
    for s in samples:
        if s.domain != domain:
            domain = s.domain
            out.append(f"<h3>{esc(domain)}</h3>")
        texts = [token_text(vocab, int(t)) for t in s.token_id]
        out.append(f'<h4>document {s.doc_id} · first {len(texts)} tokens</h4><div class="tv-grid">')
        for j, layer in enumerate(layers):
            spans = "".join(
                _span(
                    text,
                    int(s.token_id[i]),
                    s.experts[i, j],
                    None if s.weights is None else s.weights[i, j],
                    layer,
                    colors,
                )
                for i, text in enumerate(texts)
            )
            out.append(
                f'<div class="tv-block"><div class="hd">layer {layer}</div><div class="tv-text">{spans}</div></div>'
            )
        out.append("</div>")
    return "".join(out)
