"""`routelens report`: the self-contained HTML report of a trace (a thin layer over
`routelens.report.write_report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console
from routelens.errors import RoutelensError


def parse_layers(text: str | None) -> list[int] | None:
    """`"0,15,31"` -> [0, 15, 31]; None or "" -> None (the default layers)."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RoutelensError(
            f"--layers {text!r} is not a comma-separated list of layer indices; write e.g. --layers 0,15,31."
        ) from None


# The named inputs: flag -> (the result's key, the command that writes the file).
RESULTS = {
    "--cache": ("cache", "routelens simulate cache TRACE --json {path}"),
    "--balance": ("balance", "routelens simulate balance TRACE --json {path}"),
    "--distinct": ("distinct", "routelens simulate distinct TRACE --json {path}"),
}


def read_json_object(
    path: Path,
    flag: str = "--json",
    writer: str = "routelens analyze TRACE --json {path}",
    what: str = "an analysis object",
) -> dict:
    """The JSON object in `path`, or a one-line error naming `flag` and the command that writes it."""
    how = writer.format(path=path)
    if not path.is_file():
        raise RoutelensError(f"{flag} {path}: no such file; write it with `{how}`.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RoutelensError(f"{flag} {path} is not valid JSON ({exc}); write it again with `{how}`.") from None
    if not isinstance(payload, dict):
        raise RoutelensError(
            f"{flag} {path} holds a {type(payload).__name__}, not {what}; pass the file `{how}` wrote."
        )
    return payload


def load_analyses(paths: list[Path], trace=None) -> dict:
    """Merge the JSON objects of `paths` (later files win on a shared key): the old `--json` spelling.
    With `trace`, each file is checked as its named flag would check it: an analysis against the
    trace's shape, a simulator's result against its `*_meta`."""
    from routelens.report import check_analysis

    merged: dict = {}
    for path in paths:
        payload = read_json_object(path)
        if trace is not None:
            try:
                check_analysis(trace, payload)
            except RoutelensError as exc:
                raise RoutelensError(f"--json {path}: {exc}") from None
            for key, _ in RESULTS.values():
                check_result_meta(payload, key, path, "--json", trace)
        merged.update(payload)
    return merged


def check_result_meta(payload: dict, key: str, path: Path, flag: str, trace) -> None:
    """Refuse a simulator's result whose `{key}_meta` names another trace's tokens, experts or top-k."""
    writer = next(w for k, w in RESULTS.values() if k == key)
    meta = payload.get(f"{key}_meta") or {}
    mine = {"tokens": trace.num_tokens, "num_experts": trace.num_experts, "top_k": trace.top_k}
    for name, value in mine.items():
        if isinstance(meta, dict) and name in meta and meta[name] != value:
            raise RoutelensError(
                f"{flag} {path} was computed with {name}={meta[name]} but the trace at {trace.path} has "
                f"{name}={value}; simulate this trace (`{writer.format(path=path)}`)."
            )


def load_result(path: Path, flag: str, trace) -> dict:
    """The keys of one simulator's result (`cache`, `cache_*`; `balance`, `balance_*`; `distinct`,
    `distinct_*`) from `path`, refused when the file holds no such result or was computed on a trace
    of another shape (for `distinct`, keyed by layer, also of other layers).

    Only the simulator's own keys are taken, so the file of `routelens simulate all` can be passed
    to both --cache and --balance, and no input overwrites another's keys."""
    key, writer = RESULTS[flag]
    payload = read_json_object(path, flag, writer, what=f"a `{key}` result")
    if not isinstance(payload.get(key), dict):
        raise RoutelensError(
            f"{flag} {path} holds no `{key}` result; pass the file `{writer.format(path=path)}` wrote."
        )
    check_result_meta(payload, key, path, flag, trace)
    if key == "distinct":  # keyed by layer: another model's layers would fill the table with rows of no layer here
        layers, mine = list(payload[key]), [str(x) for x in trace.layers]
        if not set(layers) <= set(mine):
            raise RoutelensError(
                f"{flag} {path} has layers {','.join(layers)} but the trace at {trace.path} has layers "
                f"{','.join(mine)}; simulate this trace (`{writer.format(path=path)}`)."
            )
    return {k: v for k, v in payload.items() if k == key or k.startswith(f"{key}_")}


def load_comparison(path: Path, trace) -> dict:
    """The result of `routelens compare` in `path`, refused when it holds none or its layers are not the trace's."""
    writer = "routelens compare A B --json {path}"
    payload = read_json_object(path, "--compare", writer, what="a comparison")
    if not isinstance(payload.get("agreement"), dict):
        raise RoutelensError(
            f"--compare {path} holds no `agreement`; pass the file `{writer.format(path=path)}` wrote."
        )
    layers = (payload.get("meta") or {}).get("layers")
    if layers is not None and [str(x) for x in layers] != [str(x) for x in trace.layers]:
        raise RoutelensError(
            f"--compare {path} compares layers {layers} but the trace at {trace.path} has {trace.layers}; "
            "pass the comparison of this trace."
        )
    return payload


def report_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory (from `routelens trace`).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML file to write; figures go to <stem>_figures/ beside it.")
    ] = Path("report.html"),
    analysis_path: Annotated[
        Path | None,
        typer.Option("--analysis", help="Saved analysis (`routelens analyze --json`) to reuse instead of recomputing."),
    ] = None,
    cache_path: Annotated[
        Path | None,
        typer.Option("--cache", help="Expert-cache results (`routelens simulate cache --json`, or `simulate all`)."),
    ] = None,
    balance_path: Annotated[
        Path | None,
        typer.Option(
            "--balance", help="Expert-parallel load results (`routelens simulate balance --json`, or `simulate all`)."
        ),
    ] = None,
    distinct_path: Annotated[
        Path | None,
        typer.Option("--distinct", help="Distinct experts per batch (`routelens simulate distinct --json`)."),
    ] = None,
    compare_path: Annotated[
        Path | None,
        typer.Option("--compare", help="A comparison of this trace with another (`routelens compare A B --json`)."),
    ] = None,
    importance_path: Annotated[
        Path | None,
        typer.Option("--importance", help="Expert importance of this trace (`routelens importance TRACE --json`)."),
    ] = None,
    json_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--json",
            help="Old spelling, still accepted: JSON files merged whole, repeatable (later files win on shared "
            "keys); prefer --analysis, --cache, --balance and --distinct.",
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers", help="True layer indices of the token view, comma-separated (default: first, middle, last)."
        ),
    ] = None,
    pos: Annotated[
        bool, typer.Option("--pos", help="When computing the analysis here, include the part-of-speech analyses.")
    ] = False,
    figures: Annotated[
        Path | None,
        typer.Option(
            "--figures", help="Folder for the PNG/PDF copies of the figures (default: <stem>_figures/ beside the HTML)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write one self-contained HTML report (inline CSS and SVG, viewable offline) of a trace:
    summary, expert distributions, domain distances, locality, token view, vocabulary,
    co-activation, confidence, and the POS / cache / balance / distinct results when given.

    Examples:

        routelens report trace/ -o report.html

        routelens analyze trace/ --json analysis.json && routelens report trace/ --analysis analysis.json -o report.html

        routelens report trace/ --analysis analysis.json --cache cache.json --balance balance.json --layers 0,15,31 -o report.html

        routelens compare trace-fp32/ trace-bf16/ --json compare.json && routelens report trace-fp32/ --compare compare.json

        routelens simulate distinct trace/ -B 64 --json distinct.json && routelens report trace/ --distinct distinct.json
    """
    from contextlib import ExitStack

    from routelens import open_trace
    from routelens.lock import output_lock
    from routelens.report import check_analysis, write_report

    tr = open_trace(trace)
    tr.shard_rows()  # every shard's footer read: a damaged one is refused before any computing
    view_layers = parse_layers(layers)
    # The page and its figure folder, locked before any computing: two reports into one would
    # replace each other's files, and the second should learn it at once, not after the analysis.
    with ExitStack() as held:
        held.enter_context(output_lock(out, what="report"))
        if figures is not None:
            held.enter_context(output_lock(figures, what="report"))
        analysis = read_json_object(analysis_path, "--analysis") if analysis_path is not None else {}
        analysis.update(load_analyses(list(json_paths or []), tr))
        if analysis:
            check_analysis(tr, analysis)  # fail on a mismatched file before any computing
        for flag, path in (("--cache", cache_path), ("--balance", balance_path), ("--distinct", distinct_path)):
            if path is not None:
                analysis.update(load_result(path, flag, tr))
        if compare_path is not None:
            analysis["compare"] = load_comparison(compare_path, tr)
        if importance_path is not None:
            from routelens.pruning.importance import check_importance

            payload = read_json_object(
                importance_path, "--importance", "routelens importance TRACE --json {path}", "an importance result"
            )
            analysis["importance"] = check_importance(payload, tr, f"--importance {importance_path}")
        if "distribution" not in analysis:
            from routelens.analysis import analyze

            console.print("computing the analysis" + (" (with --pos)" if pos else "") + " ...")
            analysis = {**analyze(tr, pos=pos, progress=not quiet), **analysis}
        path = write_report(tr, analysis, out, figures_dir=figures, token_view_layers=view_layers, progress=not quiet)
        folder = figures if figures is not None else path.with_name(f"{path.stem}_figures")
        console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB), figures in {folder}/")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
