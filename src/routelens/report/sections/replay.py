"""Section of a replay report (`routelens replay MODEL --trace ROUTING --out FILE`, passed to the
report as `--replay FILE`): how often the model's own routing differs from the trace's, per domain
and layer, and what forcing the trace's routing costs its next-token predictions."""

from __future__ import annotations

from routelens.report.figures.replay import differs_figure, margin_figure
from routelens.report.html import Section, esc, figure, kv_table, pct, table
from routelens.report.sections.context import ReportContext


def _num(value) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def replay_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("replay")
    if not isinstance(result, dict) or not isinstance(result.get("routing_differs"), dict):
        return None
    differs, any_layer = result["routing_differs"], result.get("any_layer_differs") or {}
    delta, kl = result.get("delta_logprob") or {}, result.get("kl") or {}
    domains = list(differs)
    layers = [layer for layer in ctx.layers if layer in differs[domains[0]]]
    body = kv_table([("replayed trace", str(result.get("trace"))), ("tokens", f"{result.get('tokens', 0):,}")])
    rows = [
        [
            esc(d),
            pct(any_layer.get(d)),
            _num((delta.get(d) or {}).get("mean")),
            _num((delta.get(d) or {}).get("p50")),
            _num((delta.get(d) or {}).get("p99")),
            _num((kl.get(d) or {}).get("mean")),
            _num((kl.get(d) or {}).get("p99")),
        ]
        for d in domains
    ]
    headers = ["domain", "any layer differs", "Δ log p mean", "Δ log p p50", "Δ log p p99", "KL mean", "KL p99"]
    body += table(headers, rows)
    body += figure(
        ctx.sink.add(differs_figure(differs, layers), "replay-differs"),
        "Share of token-layers whose expert set differs from the replayed trace's, per layer and domain.",
        narrow=True,
    )
    margin = result.get("by_margin")
    if isinstance(margin, dict) and margin.get("routing_differs"):
        body += figure(
            ctx.sink.add(margin_figure(margin), "replay-margin"),
            "Routed differently, and the mean KL of the tokens holding those token-layers, by the router's own "
            "selection margin (ten equal-count bins).",
            narrow=True,
        )
    note = (
        "The model run over the trace's documents twice: with its own routing, and with the trace's routing "
        "replayed (`routelens.replay`: the trace's expert ids, weighed by the model's own router). Δ log p is the "
        "replayed minus the own log-probability of each next token of the trace; KL is KL(own ‖ replayed) of the "
        "next-token distributions. Differences concentrate where the router's margin is small."
    )
    return Section("replay", "Routing replay", note, body)
