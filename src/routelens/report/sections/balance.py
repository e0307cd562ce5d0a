"""Section of the expert-parallel load simulation (`routelens simulate balance`): dropped
assignments and the busiest device's load per placement and capacity factor, and with
`--decode-batch` the same for prefill batches (consecutive tokens) beside decode steps.
"""

from __future__ import annotations

from routelens.report.figures.balance import balance_figure
from routelens.report.html import Section, esc, figure, num, pct, table
from routelens.report.sections.context import ReportContext, is_scalar


def balance_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("balance")
    if not isinstance(result, dict) or not result:
        return None
    cfs = sorted({cf for by_cf in result.values() for cf in by_cf}, key=float)
    head = _head(cfs, ["placement"])
    rows = []
    for placement, by_cf in result.items():
        row = [esc(placement)]
        control = (ctx.analysis.get("balance_shuffled") or {}).get(placement) or {}
        for cf in cfs:
            v, c = by_cf.get(cf) or {}, control.get(cf) or {}
            dropped = (
                f'<span class="sub">shuffled {pct(c["dropped"], 2)}</span>' if c.get("dropped") is not None else ""
            )
            spread = c.get("imbalance_max_mean")
            spread = f'<span class="sub">shuffled {num(spread, 2)}</span>' if spread is not None else ""
            row += [pct(v.get("dropped"), 2) + dropped, num(v.get("imbalance_max_mean"), 2) + spread]
        rows.append(row)
    body = table([], rows, header_html=head)
    body += figure(
        ctx.sink.add(balance_figure(result, cfs), "balance"),
        "Dropped assignments against the capacity factor, per placement.",
        narrow=True,
    )
    decode = ctx.analysis.get("balance_decode")
    if isinstance(decode, dict) and decode:
        body += decode_table(result, decode, ctx.analysis.get("balance_meta") or {})
    note = (
        "Experts placed on devices (round-robin, or balanced from the trace's load with hot experts replicated); "
        "tokens grouped in batches in document order. Each expert accepts ⌈B·k/E·CF⌉ assignments per batch (the rule "
        "training uses), shared among its replicas, so every placement has the same slots, and drops the rest; max/mean is the load of the busiest device over the mean. Locality makes consecutive tokens "
        "pile onto the same experts, which is what over-subscribes them: the small print gives the same tokens "
        "in a random order."
    )
    return Section("balance", "Expert-parallel load", note, body)


def decode_table(prefill: dict, decode: dict, meta: dict) -> str:
    """`balance` (consecutive-token batches) and `balance_decode` (decode steps) {placement: {cf:
    {dropped, imbalance_max_mean}}} in one table: per placement a prefill row, then a decode row."""
    cfs = sorted({cf for by_cf in (*prefill.values(), *decode.values()) for cf in by_cf}, key=float)
    tokens, seqs = meta.get("batch_tokens"), meta.get("decode_batch")
    kinds = (
        ("prefill", prefill, f"{int(tokens):,} consecutive tokens" if is_scalar(tokens) else "consecutive tokens"),
        ("decode", decode, f"{int(seqs):,} sequences, a token each" if is_scalar(seqs) else "concurrent sequences"),
    )
    rows = []
    for placement in dict.fromkeys([*prefill, *decode]):
        for kind, by_placement, what in kinds:
            by_cf = by_placement.get(placement) or {}
            cells = [
                c
                for cf in cfs
                for c in (
                    pct((by_cf.get(cf) or {}).get("dropped"), 2),
                    num((by_cf.get(cf) or {}).get("imbalance_max_mean"), 2),
                )
            ]
            rows.append([esc(placement), f'{kind}<span class="sub">{esc(what)}</span>', *cells])
    steps = meta.get("decode_steps")
    note = (
        "<p>Prefill batches are consecutive tokens of the trace; a decode step holds one token of each of the sequences "
        "decoding together (each document a sequence, a finished one replaced by the next: continuous batching"
        + (f"; {int(steps):,} steps" if is_scalar(steps) else "")
        + "). Each step's capacity follows the same rule, "
        "⌈n·k/E·CF⌉ for its n tokens; max/mean is averaged over layers and batches or steps.</p>"
    )
    return (
        "<h3>Prefill batches and decode steps</h3>"
        + note
        + table([], rows, header_html=_head(cfs, ["placement", "batch"]))
    )


def _head(cfs: list[str], first: list[str]) -> str:
    """Two header rows: a CF over each (dropped, max/mean) pair, after the `first` columns."""
    span = f' colspan="{len(first)}"' if len(first) > 1 else ""
    head = (
        f"<tr><th{span}></th>"
        + "".join(f'<th colspan="2" style="text-align:center">CF {esc(cf)}</th>' for cf in cfs)
        + "</tr>"
    )
    return (
        head
        + "<tr>"
        + "".join(f"<th>{esc(f)}</th>" for f in first)
        + "<th>dropped</th><th>max/mean</th>" * len(cfs)
        + "</tr>"
    )
