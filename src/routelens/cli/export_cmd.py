"""`routelens export load TRACE --format sglang|eplb --out FILE`: a trace's per-layer expert loads
for expert-placement tools (a thin layer over `routelens.engines.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console, new_app
from routelens.cli.options import cli_config, config_option
from routelens.engines.export import ExportConfig, LayerAxis, LoadFormat

export_app = new_app("Export what a trace measured to the files serving tools read.")


@export_app.command("load")
def load_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory (from `routelens trace` or `routelens import`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .json (sglang, eplb) or .npy (eplb).")],
    format: LoadFormat = config_option(ExportConfig, "format", "--format", "-f"),
    layers: LayerAxis | None = config_option(ExportConfig, "layers", "--layers"),
    domain: str | None = config_option(ExportConfig, "domain", "--domain"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Expert loads per layer (assignment counts, layers x E) for SGLang or DeepSeek EPLB.

        routelens export load trace/ --format sglang --out expert_location.json   # then: --init-expert-location expert_location.json

        routelens export load trace/ --format eplb --out weight.npy --domain chat

    How to feed both: docs/engines.md.
    """
    from routelens.engines.export import export_load

    config = cli_config(ExportConfig, format=format, layers=layers, domain=domain, progress=not quiet)
    path = export_load(trace, out, config)
    console.print(f"[green]wrote[/] {path} ({config.format}, one row per {config.axis} layer)")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
