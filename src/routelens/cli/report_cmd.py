"""`routelens report`: the self-contained HTML report of a trace (a thin layer over
`routelens.report.inputs.build_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console


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
    replay_path: Annotated[
        Path | None,
        typer.Option("--replay", help="What replaying a trace costs the model (`routelens replay MODEL --out`)."),
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
    figure_formats: Annotated[
        str | None,
        typer.Option(
            "--figure-formats",
            help="Copies of each figure to write, comma-separated: png, pdf, svg, or none "
            "(default: $ROUTELENS_FIGURE_FORMATS, else png,pdf).",
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
    from routelens.report.inputs import build_report

    path = build_report(
        trace,
        out,
        analysis=analysis_path,
        cache=cache_path,
        balance=balance_path,
        distinct=distinct_path,
        compare=compare_path,
        importance=importance_path,
        replay=replay_path,
        json_paths=list(json_paths or []),
        layers=layers,
        pos=pos,
        figures=figures,
        figure_formats=figure_formats,
        progress=not quiet,
        say=console.print,
    )
    folder = figures if figures is not None else path.with_name(f"{path.stem}_figures")
    console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB), figures in {folder}/")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
