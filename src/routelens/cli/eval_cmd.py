"""`routelens eval`: loss and perplexity per corpus, under an optional expert capacity and top-k."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.atomic import write_json
from routelens.cli.common import console, print_json, to_stdout
from routelens.cli.options import cli_config, config_option
from routelens.training.configs import EvalConfig


def eval_command(
    model: Annotated[
        Path,
        typer.Argument(
            help="Model directory: a MoE checkpoint of any family routelens records (e.g. written by `routelens train` or `routelens prune`)."
        ),
    ],
    corpus: Annotated[
        list[str], typer.Option("--corpus", "-c", help="NAME=PATH, repeatable (see `routelens trace --help`).")
    ],
    capacity_factor: float | None = config_option(EvalConfig, "capacity_factor", "--capacity-factor"),
    top_k: int | None = config_option(EvalConfig, "top_k", "--top-k"),
    seq_len: int | None = config_option(EvalConfig, "seq_len", "--seq-len"),
    batch_size: int = config_option(EvalConfig, "batch_size", "--batch-size"),
    max_tokens: int = config_option(EvalConfig, "max_tokens", "--max-tokens"),
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the results to this JSON file; - for stdout (then no tables)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Evaluate a MoE model of any family routelens records: loss and perplexity per corpus, and the
    share of token-expert assignments dropped per layer when experts have a capacity (the ST-MoE
    train-CF vs eval-CF study). --capacity-factor and --top-k act where the experts receive the
    top-k index and weights: every family but Llama 4 and hash-routed layers, which are refused.

    Examples:

        routelens eval my-moe/ --corpus math=corpus/math.txt --capacity-factor 1.0 --top-k 2

        routelens eval my-moe/ -c code=corpus/code.txt -c prose=corpus/prose.txt --top-k 1 --capacity-factor 0.5 --json cf05.json
    """
    from routelens.training.evaluate import evaluate

    config = cli_config(
        EvalConfig,
        capacity_factor=capacity_factor,
        top_k=top_k,
        seq_len=seq_len,
        batch_size=batch_size,
        max_tokens=max_tokens,
        progress=not quiet,
    )
    result = evaluate(model, corpus, config)
    if to_stdout(json_file):
        print_json(result, indent=2, allow_nan=True)  # as the file is written below
        return
    cf = "unlimited" if result["capacity_factor"] is None else f"{result['capacity_factor']:g}"
    table = Table(
        title=f"{model}: top-{result['top_k']} of {result['num_experts']}, capacity factor {cf}", title_justify="left"
    )
    for col in ("corpus", "tokens", "loss", "perplexity"):
        table.add_column(col, justify="left" if col == "corpus" else "right")
    for name, v in result["domains"].items():
        table.add_row(name, f"{v['tokens']:,}", f"{v['loss']:.4f}", f"{v['perplexity']:.2f}")
    table.add_row(
        "[bold]all",
        f"{sum(v['tokens'] for v in result['domains'].values()):,}",
        f"{result['loss']:.4f}",
        f"{result['perplexity']:.2f}",
    )
    console.print(table)
    drops = Table(title="dropped by capacity, per MoE layer", title_justify="left")
    for col in ("layer", "assignments dropped", "tokens fully dropped"):
        drops.add_column(col, justify="right")
    for layer, d, f in zip(result["moe_layers"], result["dropped_share"], result["fully_dropped_share"]):
        drops.add_row(str(layer), f"{d:.2%}", f"{f:.2%}")
    console.print(drops)
    if json_file is not None:
        # A diverged model's loss is NaN/inf: written as before (Python reads it back) rather than lost.
        write_json(json_file, result, indent=2, allow_nan=True, what="--json")
        console.print(f"wrote {json_file}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
