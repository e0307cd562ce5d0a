"""Section of router saturation (OLMoE): how early in training each layer's routing agrees with the
final model's, from traces of the checkpoints over the same tokens.
"""

from __future__ import annotations

from routelens.report.figures.saturation import saturation_figure
from routelens.report.html import Section, esc, figure, pct, table
from routelens.report.sections.context import ReportContext


def saturation_section(ctx: ReportContext) -> Section | None:
    """Router saturation (OLMoE): agreement of each checkpoint's routing with the final one's."""
    result = ctx.analysis.get("saturation")
    if not isinstance(result, dict) or not result.get("checkpoints") or not result.get("topk"):
        return None
    labels = [str(c) for c in result["checkpoints"]]
    layers = [layer for layer in ctx.layers if layer in result["topk"]] or list(result["topk"])
    kinds = [("topk", f"top-{ctx.top_k} overlap with the final routing")] + (
        [("top1", "same first expert as the final routing")] if ctx.top_k > 1 and result.get("top1") else []
    )
    body = figure(
        ctx.sink.add(saturation_figure(result, labels, layers, kinds), "saturation"),
        "Routing of each training checkpoint against the final model's, on the same tokens; "
        "dashed: the agreement of random routing.",
    )
    matched = (result.get("baseline_matched") or {}).get("topk") or {}

    def cell(layer: str, i: int, value) -> str:
        chance = (matched.get(layer) or [None] * (i + 1))[i]
        return pct(value) + (f'<span class="sub">chance {pct(chance)}</span>' if chance is not None else "")

    rows = [[esc(layer)] + [cell(layer, i, v) for i, v in enumerate(result["topk"][layer])] for layer in layers]
    body += f"<h3>Top-{ctx.top_k} overlap with the final checkpoint</h3>" + table(
        ["layer"] + [esc(c) for c in labels], rows
    )
    note = (
        "When does a router settle? Each checkpoint traced over the same tokens as the final model: the share of a "
        "token's top-k experts that the final model also chooses (OLMoE's router saturation). Agreement near the "
        "random line means the router has not yet found its assignment (small print: the agreement of independent "
        "routings with the two checkpoints' expert loads, which unbalanced routers exceed 1/E by without any "
        "shared assignment; the traces must hold the same tokens on every aligned row, or they are refused); early saturation means later training "
        "refines the experts more than the routing."
    )
    return Section("saturation", "Router saturation during training", note, body)
