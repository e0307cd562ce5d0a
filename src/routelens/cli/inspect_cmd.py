"""`routelens inspect MODEL`: parameters and weight memory, total and active per token, from the config.

routelens inspect path/to/model
routelens inspect path/to/config.json --json params.json
routelens inspect mistralai/Mixtral-8x7B-v0.1 --top-k 1
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import BareJsonCommand, console, print_json, to_stdout
from routelens.training.params import Precision, inspect_model


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B" if not unit else "G"), (1e6, "M"), (1e3, "K" if not unit else "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def inspect(
    model: Annotated[str, typer.Argument(help="A local model directory, a config.json file, or a hub id owner/name.")],
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json", help="Write one JSON object to this file instead of tables; - or a bare --json: stdout."
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Count active parameters for this top-k instead of the config's.")
    ] = None,
) -> None:
    """Count total parameters and parameters active per token, per component, and the weights' memory.

    Built from the config alone on the meta device: no weights are read or downloaded. Active =
    every non-expert parameter + top-k routed experts per MoE layer + shared experts; embeddings
    and lm_head count in full; tied input/output embeddings count once (under embeddings).
    Memory is weights only, at 4/2/1/0.5 bytes per parameter (no quantization scales).

        routelens inspect path/to/model
        routelens inspect path/to/config.json --json params.json
        routelens inspect path/to/config.json --json -
    """
    report = inspect_model(model, top_k=top_k)
    if to_stdout(json_path):
        print_json(report.to_json(), indent=2)
        return
    if json_path is not None:
        from routelens.atomic import write_json

        write_json(json_path, report.to_json(), indent=2, newline=True, what="--json")
        console.print(f"[green]wrote[/] {json_path}")
        return
    moe = (
        f"{len(report.moe_layers)} of {report.num_layers} layers MoE, {report.num_experts} experts, top-{report.top_k}, "
        f"{_human(report.expert_params or 0)} per expert"
        if report.moe_layers
        else f"dense, {report.num_layers} layers"
    )
    console.print(f"[bold]{report.architecture}[/] ({report.model_type}): {moe}", highlight=False)
    table = Table(title=None)
    table.add_column("component")
    table.add_column("total", justify="right")
    table.add_column("active / token", justify="right")
    for comp, count in report.components.items():
        table.add_row(comp.value, f"{count.total:,}", f"{count.active:,}")
    table.add_row("[bold]all[/]", f"[bold]{report.total_params:,}[/]", f"[bold]{report.active_params:,}[/]")
    console.print(table)
    mem, act = report.memory_bytes(), report.memory_bytes(active=True)
    memory = Table()
    memory.add_column("weights")
    for p in Precision:
        memory.add_column(p.value, justify="right")
    memory.add_row("all", *(_human(mem[p.value], "B") for p in Precision))
    memory.add_row("active / token", *(_human(act[p.value], "B") for p in Precision))
    console.print(memory)
    tied = " (tied embeddings counted once)" if report.tied_embeddings else ""
    console.print(
        f"total {_human(report.total_params)}, active {_human(report.active_params)} per token{tied}", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.command("inspect", cls=BareJsonCommand)(inspect)
