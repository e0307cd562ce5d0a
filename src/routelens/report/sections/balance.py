"""Section of the expert-parallel load simulation (`routelens simulate balance`): dropped
assignments and the busiest device's load per placement and capacity factor.
"""

from __future__ import annotations

from routelens.report.figures.balance import balance_figure
from routelens.report.html import Section, esc, figure, num, pct, table
from routelens.report.sections.context import ReportContext


def balance_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("balance")
    if not isinstance(result, dict) or not result:
        return None
    cfs = sorted({cf for by_cf in result.values() for cf in by_cf}, key=float)
    head = "<tr><th></th>" + "".join(f'<th colspan="2" style="text-align:center">CF {esc(cf)}</th>' for cf in cfs) + "</tr>"
    head += "<tr><th>placement</th>" + "<th>dropped</th><th>max/mean</th>" * len(cfs) + "</tr>"
    rows = []
    for placement, by_cf in result.items():
        row = [esc(placement)]
        control = (ctx.analysis.get("balance_shuffled") or {}).get(placement) or {}
        for cf in cfs:
            v, c = by_cf.get(cf) or {}, control.get(cf) or {}
            dropped = f'<span class="sub">shuffled {pct(c["dropped"], 2)}</span>' if c.get("dropped") is not None else ""
            spread = c.get("imbalance_max_mean")
            spread = f'<span class="sub">shuffled {num(spread, 2)}</span>' if spread is not None else ""
            row += [pct(v.get("dropped"), 2) + dropped, num(v.get("imbalance_max_mean"), 2) + spread]
        rows.append(row)
    body = table([], rows, header_html=head)
    body += figure(ctx.sink.add(balance_figure(result, cfs), "balance"),
                   "Dropped assignments against the capacity factor, per placement.", narrow=True)  # fmt: skip
    note = (
        "Experts placed on devices (round-robin, or balanced from the trace's load with hot experts replicated); "
        "tokens grouped in batches in document order. Each expert accepts ⌈B·k/E·CF⌉ assignments per batch (the rule "
        "training uses), shared among its replicas, so every placement has the same slots, and drops the rest; max/mean is the load of the busiest device over the mean. Locality makes consecutive tokens "
        "pile onto the same experts, which is what over-subscribes them: the small print gives the same tokens "
        "in a random order."
    )
    return Section("balance", "Expert-parallel load", note, body)
