"""`routelens replay MODEL --trace ROUTING --out REPORT.json`: what replaying a trace's routing costs the
model (a thin layer over `routelens.analysis.replay_report.replay_report`; docs/replay.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import console


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def replay_command(
    model: Annotated[str, typer.Argument(help="Model directory or hub id (loaded in float32 on the CPU).")],
    trace: Annotated[Path, typer.Option("--trace", help="Routing trace to replay (a trace or an imported rollout).")],
    out: Annotated[Path, typer.Option("--out", help="Write the report to this JSON file (atomic).")],
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Windows per pass (default: the trace's own).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run MODEL over a trace's documents with its own routing and with the trace's routing replayed:
    the share of token-layers routed differently, the next-token log-probability and KL it costs.

    Keys: routing_differs, any_layer_differs, delta_logprob (replayed - own), kl (own || replayed),
    by_margin (ten equal-count bins of the router's selection margin).

        routelens import vllm rollout.jsonl --model MODEL --out rollout/
        routelens replay MODEL --trace rollout/ --out replay.json
    """
    from routelens.analysis.replay_report import replay_report

    report = replay_report(model, trace, out, batch_size=batch_size, progress=not quiet)
    table = Table(title=f"replay of {trace} ({report['tokens']:,} tokens)")
    for column in ("domain", "any layer differs", "delta logprob mean", "p99", "KL mean", "KL p99"):
        table.add_column(column)
    for domain, share in report["any_layer_differs"].items():
        d, k = report["delta_logprob"][domain], report["kl"][domain]
        table.add_row(domain, _pct(share), _num(d["mean"]), _num(d["p99"]), _num(k["mean"]), _num(k["p99"]))
    console.print(table)
    console.print(f"[green]wrote[/] {out}")


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_command)
