"""`routelens demo`: corpus, training, tracing, every analysis and the report, with no download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console
from routelens.cli.options import cli_config, config_option
from routelens.demo import DemoConfig


def demo_command(
    out: Path = config_option(DemoConfig, "out", "--out", "-o"),
    steps: int | None = config_option(DemoConfig, "steps", "--steps"),
    trace_tokens: int = config_option(DemoConfig, "trace_tokens", "--trace-tokens"),
    pos_tokens: int = config_option(DemoConfig, "pos_tokens", "--pos-tokens"),
    saturation_tokens: int = config_option(DemoConfig, "saturation_tokens", "--saturation-tokens"),
    seq_len: int = config_option(DemoConfig, "seq_len", "--seq-len"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Build a small Mixtral-architecture model on an embedded multi-domain corpus, trace its routing,
    run every analysis and write an HTML report. The trained model is cached in OUT/model and reused.

        routelens demo

        routelens demo --out /tmp/demo --trace-tokens 20000
    """
    from routelens.demo import run_demo

    # locks --out for the run
    report = run_demo(
        cli_config(
            DemoConfig,
            out=out,
            steps=steps,
            trace_tokens=trace_tokens,
            pos_tokens=pos_tokens,
            saturation_tokens=saturation_tokens,
            seq_len=seq_len,
            progress=not quiet,
        )
    )
    console.print(f"[green]report:[/] {report.resolve()}")
    console.print(f"open it in a browser, e.g. [bold]python -m webbrowser file://{report.resolve()}[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
