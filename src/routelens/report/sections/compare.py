"""Section of a comparison of two traces of the same tokens (`routelens compare A B --json FILE`,
passed to the report as `--compare FILE`): agreement per domain and layer, tokens that differ in
any layer, and flips against the router's margin."""

from __future__ import annotations

from routelens.report.figures.compare import agreement_figure, margin_figure
from routelens.report.html import Section, esc, figure, kv_table, pct, table
from routelens.report.sections.context import ReportContext, spread_layers


def compare_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("compare")
    if not isinstance(result, dict) or not isinstance(result.get("agreement"), dict):
        return None
    meta = result.get("meta") or {}
    agreement, differs = result["agreement"], result.get("any_layer_differs") or {}
    domains = list(agreement)
    layers = [layer for layer in ctx.layers if layer in agreement[domains[0]]]
    shown = layers if len(layers) <= 6 else spread_layers(layers, 6)
    unmatched = meta.get("unmatched") or {}
    body = kv_table(
        [
            (
                "A",
                f"{meta.get('a')} ({(meta.get('models') or {}).get('a')}, dtype {(meta.get('dtypes') or {}).get('a')})",
            ),
            (
                "B",
                f"{meta.get('b')} ({(meta.get('models') or {}).get('b')}, dtype {(meta.get('dtypes') or {}).get('b')})",
            ),
            ("aligned tokens", f"{meta.get('tokens', 0):,}"),
            ("unmatched rows", f"{unmatched.get('a', 0):,} in A, {unmatched.get('b', 0):,} in B"),
        ]
    )
    rows = [
        [esc(d)]
        + [
            f"{pct(agreement[d][n]['first'])} / {pct(agreement[d][n]['overlap'])} / {pct(agreement[d][n]['set_equal'])}"
            for n in shown
        ]
        + [pct(differs.get(d))]
        for d in domains
    ]
    body += table(["domain"] + [f"layer {esc(n)}" for n in shown] + ["any layer differs"], rows)
    pooled = "all" if "all" in agreement else domains[-1]
    body += figure(
        ctx.sink.add(agreement_figure(agreement[pooled], layers), "compare-agreement"),
        f"Agreement of B with A per layer ({esc(pooled)}).",
        narrow=True,
    )
    margin = result.get("by_margin")
    if isinstance(margin, dict) and margin.get("rate"):
        body += figure(
            ctx.sink.add(margin_figure(margin), "compare-margin"),
            f"Share of token-layers whose {esc(margin['flip'])}, by the margin {esc(margin['margin'])} of trace "
            f"{esc(str(margin['trace']).upper())}.",
            narrow=True,
        )
    note = (
        "Two traces of the same tokens (rows aligned by document, position and token id). Per domain and layer: the "
        "share of tokens whose first choice is the same expert / the mean share of A's k experts that B also chose / "
        "the share whose top-k sets are equal. Flips concentrate where the router's margin is small: tokens near a "
        "tie between experts are the ones that numerics (bfloat16 against float32, another kernel) or fine-tuning move."
    )
    return Section("compare", "Comparison of two traces", note, body)
