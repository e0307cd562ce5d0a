"""Section of distinct experts per batch (`routelens simulate distinct`): per layer, how many
experts one batch of B consecutive tokens, and one step of B sequences decoding together, touches
(what an offloading server must hold or load per step), against uniform random routing.
"""

from __future__ import annotations

from routelens.report.figures.distinct import distinct_figure
from routelens.report.html import Section, esc, figure, num, table
from routelens.report.sections.context import ReportContext, is_scalar
from routelens.simulate.distinct import uniform_distinct

STATS = ("mean", "p95", "max")


def distinct_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("distinct")
    if not isinstance(result, dict) or not result:
        return None
    decode = ctx.analysis.get("distinct_decode") or {}
    meta = ctx.analysis.get("distinct_meta") or {}
    batch = meta.get("batch")
    layers = [layer for layer in ctx.layers if layer in result] or list(result)
    chance = chance_distinct(meta, ctx.num_ids, ctx.top_k)
    named = f"B = {int(batch)}" if is_scalar(batch) else "B"
    orders = {f"{named} consecutive tokens": result}
    if decode:
        orders[f"{named} sequences decoding"] = decode
    head = (
        "<tr><th></th>"
        + "".join(f'<th colspan="{len(STATS)}" style="text-align:center">{esc(o)}</th>' for o in orders)
        + "</tr>"
    )
    head += "<tr><th>layer</th>" + "".join(f"<th>{s}</th>" for s in STATS) * len(orders) + "</tr>"
    rows = [
        [esc(layer)] + [_cell(by_layer.get(layer) or {}, s) for by_layer in orders.values() for s in STATS]
        for layer in layers
    ]
    classes = [""] * len(rows)
    if chance is not None:
        rows.append(["uniform routing"] + [num(chance, 2), "–", "–"] * len(orders))
        classes.append("base")
    body = table([], rows, header_html=head, row_classes=classes)
    caption = f"Mean distinct experts per batch, per layer, of {ctx.num_ids}"
    caption += f"; dashed: uniform routing, {num(chance, 2)}." if chance is not None else "."
    body += figure(ctx.sink.add(distinct_figure(orders, layers, ctx.num_ids, chance), "distinct"), caption, narrow=True)
    note = (
        f"For every layer and every full batch, the number of distinct experts its assignments use, of E = "
        f"{ctx.num_ids} with top-{ctx.top_k}: what an offloading server must hold, or load, for one step. Two "
        "batchings: B consecutive tokens of the trace (a prefill chunk), and B sequences decoding together, one token "
        "of each per step, each document a sequence, a finished one replaced by the next (continuous batching; steps "
        "with fewer than B sequences left out). The chance line is B tokens each routed to k of E experts uniformly "
        "at random, E (1 − (1 − k/E)^B) on average; fewer distinct experts than that is routing locality, which "
        "consecutive tokens have and concurrent sequences mostly lack."
    )
    return Section("distinct", "Distinct experts per batch", note, body)


def chance_distinct(meta: dict, num_experts: int, top_k: int) -> float | None:
    """The uniform-routing mean of the result's `distinct_meta`, or computed from its batch size
    (`simulate.distinct.uniform_distinct`) when a file lacks it; None without a batch size."""
    if is_scalar(meta.get("uniform")):
        return float(meta["uniform"])
    if is_scalar(meta.get("batch")):
        return uniform_distinct(num_experts, top_k, int(meta["batch"]))
    return None


def _cell(summary: dict, stat: str) -> str:
    """A mean with two decimals, a percentile or maximum (whole experts) as an integer; – when absent."""
    value = summary.get(stat)
    if value is None:
        return "–"
    return num(value, 2) if stat == "mean" else esc(int(value))
