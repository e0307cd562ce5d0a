"""Section of the part-of-speech analysis: the expert each tag prefers per layer with its KL and
permutation p-value, the routing-path probe against its baselines, and its figures.
"""

from __future__ import annotations

from routelens.report.figures.pos import ablation_figure, path_map_figure, specialization_figure
from routelens.report.figures_io import style
from routelens.report.html import Section, esc, figure, num, pct, table
from routelens.report.sections.context import ReportContext, is_scalar, spread_layers


def pos_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("pos")
    if not isinstance(result, dict) or not result.get("specialization"):
        return None
    spec = result["specialization"]
    layers = [layer for layer in ctx.layers if layer in spec] or list(spec)
    cols = layers if len(layers) <= 4 else spread_layers(layers, 3)
    tags = sorted(
        {t for layer in cols for t in spec[layer]}, key=lambda t: -int((result.get("counts") or {}).get(t, 0))
    )
    chance = result.get("chance_share", ctx.top_k / ctx.num_ids)

    def cell(layer: str, tag: str) -> str:
        e = spec[layer].get(tag)
        if e is None:
            return "–"
        # Bold only what survives the correction over layers x tags (older results: p < 0.01).
        strong = bool(e["significant"]) if "significant" in e else e["p_value"] < 0.01
        share = f"<b>{pct(e['max_share'])}</b>" if strong else pct(e["max_share"])
        ci = (
            f" [{pct(e['max_share_low'], 0)}–{pct(e['max_share_high'], 0)}]"
            if e.get("max_share_low") is not None
            else ""
        )
        p = (
            f"p<sub>adj</sub> {num(e['p_adjusted'], 3)}"
            if e.get("p_adjusted") is not None
            else f"p {num(e['p_value'], 3)}"
        )
        if "tested" in e and not e["tested"]:
            p = "untested (too few words)"
        return f'e{int(e["expert"])} · {share}{ci}<span class="sub">KL {num(e["kl"], 3)} · {p}</span>'

    counts = result.get("counts") or {}
    rows = [[esc(t), f"{int(counts.get(t, 0)):,}"] + [cell(layer, t) for layer in cols] for t in tags]
    body = table(["tag", "tokens"] + [f"layer {esc(layer)}" for layer in cols], rows)
    with style():
        if result.get("shares"):
            shown = [layer for layer in spread_layers(layers, 4) if layer in result["shares"]]
            body += figure(
                ctx.sink.add(specialization_figure(result, shown), "pos-specialization"),
                "Share of each tag's tokens routed to each expert (among the top-k).",
            )
        probe = result.get("probe") or {}
        if probe:
            names = [
                ("accuracy", "routing-path probe"),
                ("macro_f1", "probe macro-F1"),
                ("baseline_majority", "majority tag"),
                ("baseline_word", "word-form baseline"),
                ("shuffled", "probe on shuffled paths"),
            ]
            spread = lambda key: pct(probe[f"{key}_sd"]) if is_scalar(probe.get(f"{key}_sd")) else "–"  # noqa: E731
            body += "<h3>Routing-path probe</h3>" + table(
                ["measure", "test score", f"sd over {probe.get('splits', 1)} splits"],
                [[label, pct(probe[key]), spread(key)] for key, label in names if is_scalar(probe.get(key))],
            )
        if result.get("ablation") and result.get("layers"):
            body += figure(
                ctx.sink.add(ablation_figure(result), "pos-ablation"),
                "Probe accuracy from each single layer, from the first i layers, and without each layer "
                f"({esc(str((result.get('ablation') or {}).get('classifier', 'probe')).split('(')[0])}).",
                narrow=True,
            )
        if (result.get("tsne") or {}).get("points"):
            body += figure(
                ctx.sink.add(path_map_figure(result), "pos-path-map"),
                "t-SNE of routing paths coloured by part of speech; silhouettes against shuffled paths.",
                narrow=True,
            )
    tests = result.get("tests") or {}
    rule = (
        f"bold: significant after {esc(tests.get('correction'))} correction over the {tests.get('family')} layer × tag tests "
        f"(corrected p ≤ {tests.get('alpha')}; tags with fewer than {tests.get('min_words')} words are not tested); "
        "brackets: 95% bootstrap interval over sentences"
        if tests
        else "bold: p < 0.01, uncorrected"
    )
    note = (
        f"Tokens carry gold (or tagger) UPOS tags. For each layer and tag, the expert that receives the largest "
        f"share of the tag's tokens among their top-k (chance k/E = {chance:.3f}), the KL divergence of the tag's "
        "expert distribution from the layer's overall one (which controls for unbalanced load), and a permutation "
        f"p-value (tags shuffled within each sentence; {rule}). The probe predicts the tag from the routing path alone, tested "
        "on held-out sentences (grouped by text, so duplicated sentences stay on one side; mean and standard deviation "
        "over random splits) against majority, word-form and shuffled-path baselines."
    )
    return Section("pos", "Part of speech", note, body)
