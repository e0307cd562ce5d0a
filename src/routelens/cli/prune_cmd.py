"""`routelens importance`, `routelens ablate` and `routelens prune`: which experts a trace says
matter, what removing some costs on held-out text, and a smaller checkpoint without the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from routelens.atomic import write_json
from routelens.cli.common import console, print_json, to_stdout
from routelens.cli.options import cli_config, config_option
from routelens.pruning.configs import AblateConfig, Criterion, PruneConfig

JSON_HELP = "Write the result to this JSON file (atomic); - for stdout (then no tables)."
QUIET = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _emit(result: dict, json_path: Path | None, show) -> None:
    """The JSON alone on stdout for `--json -`; else the tables, then the file if asked."""
    if to_stdout(json_path):
        print_json(result, indent=1)
        return
    show(result)
    if json_path is not None:
        write_json(json_path, result, indent=1, what="--json")
        console.print(f"[green]wrote[/] {json_path}")


def importance_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory (from `routelens trace`).")],
    json_path: Annotated[Path | None, typer.Option("--json", help=JSON_HELP)] = None,
    quiet: QUIET = False,
) -> None:
    """Expert importance per MoE layer, overall and per domain: frequency (share of assignments),
    weighted (mean weight x frequency) and reap (mean weight x output norm, on traces made with
    --store-expert-norms).

    Examples:

        routelens importance trace/

        routelens importance trace/ --json importance.json
    """
    from routelens.pruning import expert_importance

    _emit(expert_importance(trace, progress=not quiet), json_path, print_importance)


def print_importance(result: dict, shown: int = 3) -> None:
    meta, overall = result["meta"], result["overall"]
    E = meta.get("num_ids", meta["num_experts"])  # per-expert arrays span ids; files before num_ids said it here
    console.print(
        f"[bold]{meta['model']}[/]: {meta['tokens']:,} tokens, {len(meta['layers'])} MoE layers, "
        f"top-{meta['top_k']} of {E}; criteria {', '.join(meta['criteria'])}"
    )
    table = Table(
        title=f"Most and least important experts per layer (uniform frequency 1/E = {1 / E:.3f})", title_justify="left"
    )
    table.add_column("layer")
    for criterion in meta["criteria"]:
        table.add_column(f"{criterion}: top {shown}")
        table.add_column(f"{criterion}: bottom {shown}")
    for layer in meta["layers"]:
        cells = []
        for criterion in meta["criteria"]:
            values = np.asarray(overall[criterion][layer])
            order = np.lexsort((np.arange(E), -values))
            cells += [
                ", ".join(f"e{e} {values[e]:.3f}" for e in order[:shown]),
                ", ".join(f"e{e} {values[e]:.3f}" for e in order[::-1][:shown]),
            ]
        table.add_row(layer, *cells)
    console.print(table)


def ablate_command(
    model: Annotated[Path, typer.Argument(help="Model directory (e.g. written by `routelens train`).")],
    corpus: Annotated[
        list[str], typer.Option("--corpus", "-c", help="NAME=PATH, repeatable (see `routelens trace --help`).")
    ],
    expert: list[str] | None = config_option(AblateConfig, "experts", "--expert", "-e"),
    seq_len: int | None = config_option(AblateConfig, "seq_len", "--seq-len"),
    batch_size: int = config_option(AblateConfig, "batch_size", "--batch-size"),
    max_tokens: int = config_option(AblateConfig, "max_tokens", "--max-tokens"),
    held_out: bool = config_option(AblateConfig, "held_out", "--held-out/--all-text"),
    json_path: Annotated[Path | None, typer.Option("--json", help=JSON_HELP)] = None,
    quiet: QUIET = False,
) -> None:
    """Held-out loss per domain with some experts removed (each router choosing among the rest, by
    its family's rule), beside the intact model's.

    Examples:

        routelens ablate my-moe/ -c code=corpus/code.txt -c math=corpus/math.txt --expert 0:3

        routelens ablate my-moe/ -c code=corpus/code.txt --expert 0:3 --expert 2:1,5 --json ablate.json
    """
    from routelens.pruning import ablate

    config = cli_config(
        AblateConfig,
        experts=expert,
        seq_len=seq_len,
        batch_size=batch_size,
        max_tokens=max_tokens,
        held_out=held_out,
        progress=not quiet,
    )
    _emit(ablate(model, corpus, config), json_path, print_ablation)


def print_ablation(result: dict) -> None:
    removed = "; ".join(f"layer {layer}: {', '.join(map(str, ids))}" for layer, ids in result["removed"].items())
    text = "held-out documents" if result["held_out"] else "the whole corpora"
    table = Table(title=f"{result['model']} without experts ({removed}), loss on {text}", title_justify="left")
    for col in ("corpus", "tokens", "intact", "ablated", "change"):
        table.add_column(col, justify="left" if col == "corpus" else "right")
    intact, ablated = result["intact"], result["ablated"]
    for name, v in intact["domains"].items():
        table.add_row(
            name,
            f"{v['tokens']:,}",
            f"{v['loss']:.4f}",
            f"{ablated['domains'][name]['loss']:.4f}",
            f"{result['delta']['domains'][name]:+.4f}",
        )
    table.add_row("[bold]all", "", f"{intact['loss']:.4f}", f"{ablated['loss']:.4f}", f"{result['delta']['loss']:+.4f}")
    console.print(table)


def prune_command(
    model: Annotated[Path, typer.Argument(help="Model directory (a Hugging Face MoE checkpoint).")],
    trace: Annotated[
        Path, typer.Option("--trace", help="Trace of this model (from `routelens trace`) to rank experts by.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the pruned checkpoint.")],
    keep: int | None = config_option(PruneConfig, "keep", "--keep"),
    drop_fraction: float | None = config_option(PruneConfig, "drop_fraction", "--drop-fraction"),
    # a plain string, so that an unknown criterion is refused in one line by PruneConfig
    criterion: str = config_option(
        PruneConfig, "criterion", "--criterion", metavar="|".join(c.value for c in Criterion)
    ),
    seed: int = config_option(PruneConfig, "seed", "--seed"),
    domain: str | None = config_option(PruneConfig, "domain", "--domain"),
    overwrite: bool = config_option(PruneConfig, "overwrite", "--overwrite"),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the prune record (prune.json) here; - for stdout.")
    ] = None,
    quiet: QUIET = False,
) -> None:
    """A checkpoint of the same family with N experts in every MoE layer: the ones the trace ranks
    highest (kept weights bit-equal, router rows and biases kept, config counts and top-k updated).

    Examples:

        routelens prune my-moe/ --trace trace/ --keep 6 --criterion frequency --out my-moe-6/

        routelens prune my-moe/ --trace trace-norms/ --drop-fraction 0.5 --criterion reap --out my-moe-4/

        routelens prune my-moe/ --trace trace/ --keep 4 --criterion random --seed 1 --out my-moe-r1/
    """
    from routelens.pruning import prune

    config = cli_config(
        PruneConfig,
        keep=keep,
        drop_fraction=drop_fraction,
        criterion=criterion,
        seed=seed,
        domain=domain,
        overwrite=overwrite,
        progress=not quiet,
    )
    _emit(prune(model, trace, out, config), json_path, lambda r: print_pruned(r, out))


def print_pruned(record: dict, out: Path) -> None:
    shares = record["kept_assignment_share"]
    console.print(
        f"[green]wrote[/] {out}: {record['family']} with {record['num_experts']} of {record['num_experts_before']} experts "
        f"per MoE layer, top-{record['top_k']} ({record['settings']['criterion']}); the kept experts took "
        f"{min(shares.values()):.1%} .. {max(shares.values()):.1%} of the trace's assignments per layer"
    )


def register(app: typer.Typer) -> None:
    app.command("importance")(importance_command)
    app.command("ablate")(ablate_command)
    app.command("prune")(prune_command)
