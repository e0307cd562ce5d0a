"""`routelens demo`: corpus, training, tracing, every analysis and the report, with no download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for corpus/, model/, trace/ and report.html.")] = Path(
        "routelens-demo"
    ),
    steps: Annotated[int | None, typer.Option(help="Training steps of the demo model (default: the tuned demo setting).")] = None,
    trace_tokens: Annotated[int, typer.Option(help="Tokens per domain to trace and analyze.")] = 60_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Build a small Mixtral-architecture model on an embedded multi-domain corpus, trace its routing,
    run every analysis and write an HTML report. The trained model is cached in OUT/model and reused.

        routelens demo

        routelens demo --out /tmp/demo --trace-tokens 20000
    """
    from routelens.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(out=out, steps=steps, trace_tokens=trace_tokens, progress=not quiet))
    console.print(f"[green]report:[/] {report.resolve()}")
    console.print(f"open it in a browser, e.g. [bold]python -m webbrowser file://{report.resolve()}[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
