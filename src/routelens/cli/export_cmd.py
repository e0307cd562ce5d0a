"""`routelens export load TRACE --format sglang|eplb --out FILE`: a trace's per-layer expert loads
for expert-placement tools (a thin layer over `routelens.engines.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from routelens.cli.common import console, new_app
from routelens.cli.options import cli_config, config_option
from routelens.engines.export import ExportConfig, LayerAxis, LoadFormat
from routelens.engines.placement import PlacementConfig, PlacementFormat

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


@export_app.command("placement")
def placement_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory (from `routelens trace` or `routelens import`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
    devices: int = config_option(PlacementConfig, "devices", "--devices", "-n"),
    redundant: int = config_option(PlacementConfig, "redundant", "--redundant", "-r"),
    format: PlacementFormat = config_option(PlacementConfig, "format", "--format", "-f"),
    domain: str | None = config_option(PlacementConfig, "domain", "--domain"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """An equal-slot expert placement ((E + R) / N experts per device) chosen to lower the highest
    device load on the trace, for vLLM-Ascend's expert_map_path or SGLang's --init-expert-location.

        routelens export placement trace/ --devices 8 --redundant 8 --format sglang --out placement.json

        routelens export placement trace/ --devices 16 --format vllm-ascend --out expert_map.json

    How to feed both: docs/engines.md.
    """
    from routelens.engines.placement import export_placement

    config = cli_config(
        PlacementConfig, devices=devices, redundant=redundant, format=format, domain=domain, progress=not quiet
    )
    placed = export_placement(trace, out, config)
    worst = int(np.argmax(placed.balance))
    console.print(
        f"[green]wrote[/] {placed.path} ({config.format}, {config.devices} devices x "
        f"{len(placed.device_experts[0][0])} slots): balance (max / mean device load) "
        f"{float(np.mean(placed.balance)):.3f} mean over {len(placed.balance)} MoE layers, "
        f"{placed.balance[worst]:.3f} worst (layer {placed.moe_layers[worst]})"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
