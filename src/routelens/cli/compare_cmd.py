"""`routelens compare A B`: how the routing of two traces of the same tokens agrees (a thin layer
over `routelens.analysis.compare.compare_traces`; keys in docs/engines.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import console, emit_result

SHOWN_LAYERS = 6


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def compare_command(
    a: Annotated[Path, typer.Argument(help="Reference trace (A); its domains group the tokens.")],
    b: Annotated[Path, typer.Argument(help="Trace of the same tokens to compare with A (B).")],
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the result to this JSON file (atomic); - for stdout (then no tables)."),
    ] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", help="Print every layer.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Agreement of two traces of the same tokens: first choice, top-k overlap, equal top-k sets per
    domain and layer, tokens differing in any layer, and flips against the router's margin.

    Rows are aligned by document, position and token id; traces of other tokens are refused.

        routelens compare trace-fp32/ trace-bf16/ --json compare.json

        routelens compare trace-hf/ trace-vllm/ --json compare.json && routelens report trace-hf/ --compare compare.json
    """
    from routelens.analysis.compare import compare_traces

    emit_result(
        compare_traces(a, b, progress=not quiet), json_path, lambda r: print_comparison(r, all_layers=all_layers)
    )


def print_comparison(result: dict, *, all_layers: bool = False) -> None:
    meta = result["meta"]
    names = [str(x) for x in meta["layers"]]
    if not all_layers and len(names) > SHOWN_LAYERS:
        names = [
            names[i] for i in sorted({round(j * (len(names) - 1) / (SHOWN_LAYERS - 1)) for j in range(SHOWN_LAYERS)})
        ]
    unmatched = meta["unmatched"]
    console.print(
        f"{meta['tokens']:,} aligned tokens (unmatched rows: {unmatched['a']:,} in A, {unmatched['b']:,} in B), "
        f"top-{meta['top_k']} of {meta['num_experts']}"
    )
    table = Table(title="Routing agreement (%): first choice / top-k overlap / equal top-k set", title_justify="left")
    table.add_column("domain")
    for name in names:
        table.add_column(f"layer {name}", justify="right")
    table.add_column("any layer differs", justify="right")
    for domain, layers in result["agreement"].items():
        cells = [" / ".join(_num(layers[n][key]) for key in ("first", "overlap", "set_equal")) for n in names]
        table.add_row(domain, *cells, _pct(result["any_layer_differs"].get(domain)))
    console.print(table)
    margin = result.get("by_margin")
    if not margin:
        console.print("flip rate by margin: skipped (neither trace stores probs or weights of k >= 2)")
        return
    bins = Table(
        title=f"Flip rate ({margin['flip']}) against the margin {margin['margin']} of trace {margin['trace'].upper()}",
        title_justify="left",
    )
    for col in ("margin", "token-layers", "flips", "rate"):
        bins.add_column(col, justify="right")
    edges = margin["edges"]
    for i, (n, f, r) in enumerate(zip(margin["counts"], margin["flips"], margin["rate"])):
        bins.add_row(f"[{edges[i]:g}, {edges[i + 1]:g})", f"{n:,}", f"{f:,}", _pct(r))
    console.print(bins)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
