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
        raise RoutelensError(f"--layers {text!r} is not a comma-separated list of layer indices; write e.g. --layers 0,15,31.") from None


def load_analyses(paths: list[Path]) -> dict:
    """Merge the JSON objects of `paths` (later files win on a shared key)."""
    merged: dict = {}
    for path in paths:
        if not path.is_file():
            raise RoutelensError(f"--json {path}: no such file; write it with `routelens analyze TRACE --json {path}`.")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RoutelensError(f"--json {path} is not valid JSON ({exc}); write it again with `routelens analyze --json`.") from None
        if not isinstance(payload, dict):
            raise RoutelensError(f"--json {path} holds a {type(payload).__name__}, not an analysis object; pass the file `routelens analyze --json` wrote.")
        merged.update(payload)
    return merged


def report_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory (from `routelens trace`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write; figures go to <stem>_figures/ beside it.")] = Path("report.html"),
    json_paths: Annotated[list[Path] | None, typer.Option(
        "--json", help="Saved analysis JSON to reuse instead of recomputing; repeat to add `routelens simulate` "
        "or other results (later files win on shared keys).")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="True layer indices of the token view, comma-separated (default: first, middle, last).")] = None,
    pos: Annotated[bool, typer.Option("--pos", help="When computing the analysis here, include the part-of-speech analyses.")] = False,
    figures: Annotated[Path | None, typer.Option("--figures", help="Folder for the PNG/PDF copies of the figures (default: <stem>_figures/ beside the HTML).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write one self-contained HTML report (inline CSS and SVG, viewable offline) of a trace:
    summary, expert distributions, domain distances, locality, token view, vocabulary,
    co-activation, confidence, and the POS / cache / balance results when given.

    Examples:

        routelens report trace/ -o report.html

        routelens analyze trace/ --json analysis.json && routelens report trace/ --json analysis.json -o report.html

        routelens report trace/ --json analysis.json --json simulate.json --layers 0,15,31 -o report.html
    """
    from routelens import open_trace
    from routelens.report import check_analysis, write_report

    tr = open_trace(trace)
    view_layers = parse_layers(layers)
    analysis = load_analyses(list(json_paths or []))
    if analysis:
        check_analysis(tr, analysis)  # fail on a mismatched file before any computing
    if "distribution" not in analysis:
        from routelens.analysis import analyze

        console.print("computing the analysis" + (" (with --pos)" if pos else "") + " ...")
        analysis = {**analyze(tr, pos=pos, progress=not quiet), **analysis}
    path = write_report(tr, analysis, out, figures_dir=figures, token_view_layers=view_layers, progress=not quiet)
    folder = figures if figures is not None else path.with_name(f"{path.stem}_figures")
    console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB), figures in {folder}/")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
