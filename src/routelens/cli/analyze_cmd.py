"""`routelens analyze` and `routelens saturation`: the routing analyses of a trace, printed as a
summary and saved as JSON (schema: docs/analysis-json.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from routelens.analysis.analyze import AnalyzeConfig, LocalityNull
from routelens.analysis.pos import PosConfig
from routelens.analysis.pos_specialization import Correction
from routelens.cli.common import console, emit_result
from routelens.cli.options import cli_config, config_option

SHOWN_LAYERS = 6  # layers in the printed locality table unless --all-layers
JSON_HELP = "Write the full result to this JSON file (atomic); - for stdout (then no tables)."


def analyze_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory (from `routelens trace`).")],
    json_path: Annotated[Path | None, typer.Option("--json", help=JSON_HELP)] = None,
    pos: bool = config_option(AnalyzeConfig, "pos", "--pos"),
    min_count: int = config_option(AnalyzeConfig, "min_count", "--min-count"),
    max_distance: int = config_option(AnalyzeConfig, "max_distance", "--max-distance"),
    bootstrap: int = config_option(AnalyzeConfig, "bootstrap", "--bootstrap"),
    seed: int = config_option(AnalyzeConfig, "seed", "--seed"),
    locality_null: LocalityNull = config_option(AnalyzeConfig, "locality_null", "--locality-null"),
    locality_permutations: int = config_option(AnalyzeConfig, "locality_permutations", "--locality-permutations"),
    keep_straddling: bool = config_option(AnalyzeConfig, "keep_straddling", "--keep-straddling"),
    correction: Correction = config_option(PosConfig, "correction", "--correction"),
    alpha: float = config_option(PosConfig, "alpha", "--alpha"),
    min_words: int = config_option(PosConfig, "min_words", "--min-words"),
    all_layers: Annotated[bool, typer.Option("--all-layers", help="Print every layer in the locality table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Expert distribution per domain, positional locality with its baselines, domain distances,
    vocabulary specialization, co-activation and router confidence of a trace.

    Examples:

        routelens analyze trace/

        routelens analyze trace/ --json analysis.json --bootstrap 500 --seed 1

        routelens analyze trace-pos/ --pos --json analysis.json

        routelens analyze trace-pos/ --pos --correction holm --alpha 0.01 --min-words 50
    """
    from routelens.analysis import analyze

    config = cli_config(
        AnalyzeConfig,
        pos=pos,
        min_count=min_count,
        max_distance=max_distance,
        bootstrap=bootstrap,
        seed=seed,
        locality_null=locality_null,
        locality_permutations=locality_permutations,
        keep_straddling=keep_straddling,
        progress=not quiet,
    )
    pos_config = cli_config(
        PosConfig, correction=correction, alpha=alpha, min_words=min_words, seed=seed, bootstrap=bootstrap
    )
    result = analyze(trace, config, pos_config=pos_config)
    emit_result(result, json_path, lambda result: print_summary(result, all_layers=all_layers))


def print_summary(result: dict, *, all_layers: bool = False) -> None:
    meta = result["meta"]
    names = [str(layer) for layer in meta["layers"]]
    k = meta["top_k"]
    E = meta.get("num_ids", meta["num_experts"])  # per-expert arrays span ids; files before num_ids said it here
    console.print(
        f"[bold]{meta['model'].get('name_or_path', '?')}[/]: {meta['tokens']:,} tokens, "
        f"{len(names)} MoE layers, top-{k} of {E} experts, domains {', '.join(meta['domains'])}"
    )
    _print_distribution(result, names, E)
    shown = names if all_layers or len(names) <= SHOWN_LAYERS else _spread(names, SHOWN_LAYERS)
    _print_locality(result, shown)
    vocab = [v for v in result["vocabulary"].values() if v is not None]
    null = [v for v in (result.get("vocabulary_null") or {}).values() if v is not None]
    if vocab:
        chance = (
            f"chance (same counts and load, identity ignored) {min(null):.3f} .. {max(null):.3f}; k/E = {k / E:.3f}"
            if null
            else f"uniform routing tends to {k / E:.3f}"
        )
        console.print(
            f"vocabulary specialization (min count {meta['params']['min_count']}): "
            f"{min(vocab):.3f} .. {max(vocab):.3f} over layers ({chance})"
        )
    if not meta.get("has_weights", True) and not meta.get("has_probs"):
        console.print(
            "router confidence: skipped (the trace has no weights or probs: imported traces record experts only)"
        )
    if result.get("lookahead"):
        _print_lookahead(result["lookahead"])
    if result.get("pos"):
        _print_pos(result["pos"], shown)


def _print_lookahead(lookahead: dict) -> None:
    """Per predicting layer and distance: the lookahead predictor against the previous token's experts."""
    table = Table(
        title="Lookahead: layer l+d's experts predicted at layer l (exact set, ± s.e.; recall) "
        "vs the previous token's experts",
        title_justify="left",
    )
    for col in ("layer -> target", "lookahead exact", "recall", "previous token exact", "recall"):
        table.add_column(col, justify="right")
    for layer, row in lookahead.items():
        for d, c in row.items():
            table.add_row(
                f"{layer} -> {c['target_layer']} (d={d})",
                f"{_pct(c['exact'])} ± {_pct(c['exact_se'])}",
                _pct(c["recall"]),
                f"{_pct(c['previous_exact'])} ± {_pct(c['previous_exact_se'])}",
                _pct(c["previous_recall"]),
            )
    console.print(table)


def _print_pos(pos: dict, shown: list[str], tags_shown: int = 8) -> None:
    """Most frequent tags' top expert and share per layer, then the probe against its baselines."""
    spec, counts = pos.get("specialization") or {}, pos.get("counts") or {}
    layers = [n for n in shown if n in spec]
    if layers:
        tests = pos.get("tests") or {}
        rule = (
            (
                f"* significant: {tests.get('correction', 'fdr_bh')}-corrected p <= {tests.get('alpha', 0.05)} over "
                f"{tests.get('family', '?')} tests, {tests.get('significant', '?')} significant; "
                f"tags under {tests.get('min_words', 30)} words untested"
            )
            if tests
            else "* p < 0.01, uncorrected"
        )
        table = Table(
            title=f"Part of speech: the expert taking most of each tag (chance k/E = {_pct(pos.get('chance_share'))}; {rule})",
            title_justify="left",
        )
        table.add_column("tag")
        table.add_column("tokens", justify="right")
        for name in layers:
            table.add_column(f"layer {name}", justify="right")
        tags = sorted(spec[layers[0]], key=lambda t: -int(counts.get(t, 0)))[:tags_shown]
        for tag in tags:
            cells = []
            for name in layers:
                e = spec[name].get(tag)
                cells.append(
                    "-"
                    if not e
                    else f"e{e['expert']} {_pct(e['max_share'])}{'*' if _significant(e) else ''}{_interval(e)}"
                )
            table.add_row(tag, f"{int(counts.get(tag, 0)):,}", *cells)
        console.print(table)
    probe = pos.get("probe")
    if probe:
        console.print(
            f"routing-path probe: accuracy {_pm(probe, 'accuracy')} (macro-F1 {_pm(probe, 'macro_f1')}); "
            f"majority tag {_pm(probe, 'baseline_majority')}, word form {_pm(probe, 'baseline_word')}, "
            f"shuffled paths {_pm(probe, 'shuffled')}"
            + (f"; mean ± sd over {probe['splits']} splits by sentence" if probe.get("splits") else ""),
            soft_wrap=True,  # one line per result, whatever the terminal's width (easy to grep)
        )
    ablation = pos.get("ablation")
    if ablation and ablation.get("single"):
        best = max(ablation["single"], key=lambda name: ablation["single"][name])
        kind = "MLP" if str(ablation.get("classifier", "")).startswith("MLP") else "linear"
        console.print(
            f"layer ablation ({kind} probes): best single layer {best} ({_pct(ablation['single'][best])}), all layers "
            f"{_pct(ablation.get('full'))}"
            + (f", most needed layer {ablation['most_needed']}" if ablation.get("most_needed") else ""),
            soft_wrap=True,
        )


def _pm(probe: dict, key: str) -> str:
    """A probe score with its spread between splits, when there is one."""
    sd = probe.get(f"{key}_sd")
    return _pct(probe.get(key)) + ("" if sd is None else f" ± {100 * sd:.1f}")


def _significant(entry: dict) -> bool:
    """The corrected decision; a result from before corrections falls back to p < 0.01."""
    if "significant" in entry:
        return bool(entry["significant"])
    return entry.get("p_value") is not None and entry["p_value"] < 0.01


def _interval(entry: dict, low: str = "max_share_low", high: str = "max_share_high") -> str:
    if entry.get(low) is None or entry.get(high) is None:
        return ""
    return f" [{100 * entry[low]:.0f}-{100 * entry[high]:.0f}]"


def _spread(names: list[str], n: int) -> list[str]:
    """n layers spread evenly, first and last included (Mixtral Table 5 shows 0, 15, 31)."""
    return [names[i] for i in np.unique(np.linspace(0, len(names) - 1, n).round().astype(int))]


def _print_distribution(result: dict, names: list[str], E: int) -> None:
    table = Table(title="Expert distribution (share of assignments; uniform 1/E)", title_justify="left")
    for col in (
        "domain",
        "most used (layer: expert)",
        "least used (layer: expert)",
        "largest JS divergence to another domain [95% CI]",
    ):
        table.add_column(col)
    js_best: dict[str, tuple[float, str, str, float | None, float | None]] = {}
    for name in names:
        for p in result["domain_distance"][name]["pairs"]:
            for a, b in ((p["a"], p["b"]), (p["b"], p["a"])):
                if p["js"] is not None and p["js"] > js_best.get(a, (-1.0,))[0]:
                    js_best[a] = (p["js"], name, b, p["ci_low"], p["ci_high"])
    for domain, layers in result["distribution"].items():
        shares = np.array([layers[n] for n in names], dtype=float)  # (L, E)
        if np.isnan(shares).all():
            continue
        hi = np.unravel_index(np.nanargmax(shares), shares.shape)
        lo = np.unravel_index(np.nanargmin(shares), shares.shape)
        js = js_best.get(domain)
        js_text = (
            "-"
            if js is None
            else f"{js[0]:.4f} vs {js[2]} at layer {js[1]}"
            + (f" [{js[3]:.4f}, {js[4]:.4f}]" if js[3] is not None else "")
        )
        table.add_row(
            domain,
            f"{shares[hi]:.3f} ({names[hi[0]]}: {hi[1]})",
            f"{shares[lo]:.3f} ({names[lo[0]]}: {lo[1]})",
            js_text,
        )
    console.print(table)
    console.print(f"uniform share 1/E = {1 / E:.3f}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _signed(entry: dict, kind: str) -> str:
    value, ci = entry.get(kind), entry.get(f"{kind}_ci") or {}
    if value is None:
        return "-"
    text = f"{100 * value:+.1f}"
    if ci.get("low") is not None:
        text += f" [{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]"
    return text


def _print_locality(result: dict, shown: list[str]) -> None:
    table = Table(
        title="Positional locality: consecutive tokens with the same first expert / any shared expert",
        title_justify="left",
    )
    table.add_column("domain")
    for name in shown:
        table.add_column(f"layer {name}\nfirst / any", justify="right")
    for domain, layers in result["locality"].items():
        table.add_row(domain, *(f"{_pct(layers[n]['first'])} / {_pct(layers[n]['any'])}" for n in shown))
    perm = result["locality_permuted"]["all"]
    table.add_row("[dim]permuted (all)", *(f"[dim]{_pct(perm[n]['first'])} / {_pct(perm[n]['any'])}" for n in shown))
    excess = result.get("locality_excess", {}).get("all")
    if excess:  # real minus permuted, with its 95% interval over documents
        table.add_row(
            "[dim]real - permuted (all)",
            *(f"[dim]{_signed(excess[n], 'first')} / {_signed(excess[n], 'any')}" for n in shown),
        )
    base = result["locality_baseline"]
    table.add_row("[dim]random", *([f"[dim]{_pct(base['first'])} / {_pct(base['any'])}"] * len(shown)))
    console.print(table)


def saturation_command(
    traces: Annotated[
        list[Path],
        typer.Argument(help="Traces of checkpoints of one model over one corpus, the final checkpoint last."),
    ],
    json_path: Annotated[Path | None, typer.Option("--json", help=JSON_HELP.replace("full ", ""))] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Router saturation: per layer, how much of each checkpoint's top-k routing already agrees
    with the final checkpoint's.

        routelens saturation trace-step100/ trace-step500/ trace-final/ --json saturation.json
    """
    from routelens.analysis import router_saturation

    emit_result(router_saturation(traces, progress=not quiet), json_path, print_saturation)


def print_saturation(result: dict) -> None:
    table = Table(
        title="Router saturation: share of top-k (top-1) also chosen at the final checkpoint", title_justify="left"
    )
    table.add_column("layer")
    for label in result["checkpoints"]:
        table.add_column(label, justify="right")
    for name in result["topk"]:
        table.add_row(name, *(f"{_pct(a)} ({_pct(b)})" for a, b in zip(result["topk"][name], result["top1"][name])))
    console.print(table)
    base = result["baseline"]
    console.print(f"random routing: {_pct(base['topk'])} ({_pct(base['top1'])})")
    matched = result.get("baseline_matched")
    if matched:  # independent routing at the observed loads: agreement that load alone gives
        span = lambda kind: [v for values in matched[kind].values() for v in values[:-1] if v is not None]  # noqa: E731
        if span("topk"):
            console.print(
                f"independent routing at the same expert loads: {_pct(min(span('topk')))} .. {_pct(max(span('topk')))} "
                f"({_pct(min(span('top1')))} .. {_pct(max(span('top1')))}) over layers and checkpoints"
            )


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
    app.command("saturation")(saturation_command)
