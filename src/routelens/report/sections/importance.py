"""Section of expert importance (`routelens importance`, passed as `routelens report --importance`):
which experts carry each layer's computation, and how many a pruned model could keep.
"""

from __future__ import annotations

import numpy as np

from routelens.report.figures.importance import coverage, importance_figure
from routelens.report.html import Section, esc, figure, pct, table
from routelens.report.sections.context import ReportContext


def importance_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("importance")
    if not isinstance(result, dict) or not isinstance(result.get("overall"), dict):
        return None
    overall = result["overall"]
    criteria = [c for c in ("frequency", "weighted", "reap") if c in overall]
    layers = [layer for layer in ctx.layers if layer in overall["frequency"]]
    E = ctx.num_ids
    body = figure(
        ctx.sink.add(importance_figure(overall, layers, criteria), "importance"),
        "Left: each criterion per layer and expert, relative to the layer's mean expert. Right: the share "
        "of a layer's assignments its N most used experts take; dashed: uniform routing (N/E).",
    )
    curves = coverage(np.array([overall["frequency"][layer] for layer in layers], dtype=float))
    keeps = sorted({max(1, E // 4), max(1, E // 2), max(1, 3 * E // 4)})
    rows = [[esc(layer)] + [pct(curves[i][n - 1]) for n in keeps] for i, layer in enumerate(layers)]
    body += "<h3>Assignments taken by the most used experts</h3>" + table(
        ["layer"] + [f"{n} of {E} kept" for n in keeps], rows
    )
    note = (
        "Which experts matter? frequency is an expert's share of the layer's assignments; weighted multiplies it by "
        "the mean combination weight the router gave it; reap (arXiv 2510.13999) is the mean over the tokens routed "
        "to it of weight x the norm of its output, and needs a trace made with --store-expert-norms. `routelens "
        "prune` keeps the N highest per layer; `routelens ablate` measures what removing any set costs on held-out "
        "text. A flat curve on the right means pruning costs coverage in proportion; a steep one, that a few experts "
        "carry the layer."
    )
    return Section("importance", "Expert importance", note, body)
