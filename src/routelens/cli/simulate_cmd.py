"""`routelens simulate cache|balance|all`: systems simulators over a routing trace.

Thin layer over `routelens.simulate`: parse options, run, print rich tables, write --json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import console, new_app
from routelens.errors import RoutelensError
from routelens.simulate.policies import Placement, Policy

simulate_app = new_app("Simulate expert caching (offloading) and expert-parallel load over a trace.")

TraceArg = Annotated[Path, typer.Argument(help="Trace directory written by `routelens trace`.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON to this file (atomically).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the shuffled-order control.")]
PolicyOpt = Annotated[list[Policy] | None, typer.Option("--policy", "-p", help="Cache policy, repeatable (default: all).")]
CapacityOpt = Annotated[
    list[int] | None, typer.Option("--capacity", "-C", help="Experts cached per layer, repeatable (default: 1..E).")
]
ResetOpt = Annotated[bool, typer.Option("--reset-per-document", help="Empty the cache at every document start.")]
ShuffledOpt = Annotated[bool, typer.Option("--shuffled/--no-shuffled", help="Also replay a shuffled order (locality control).")]
ExpertBytesOpt = Annotated[int | None, typer.Option(help="Bytes of one expert (default: manifest expert_params x --dtype-bytes).")]
DtypeBytesOpt = Annotated[float, typer.Option(help="Bytes per expert parameter, e.g. 2 for bf16, 0.5 for 4-bit.")]
PerLayerOpt = Annotated[bool, typer.Option("--per-layer", help="Print one table per layer instead of the mean over layers.")]
DevicesOpt = Annotated[int, typer.Option("--devices", "-D", help="Expert-parallel devices.")]
BatchOpt = Annotated[int, typer.Option("--batch-tokens", "-B", help="Tokens per batch, consecutive in trace order.")]
CfOpt = Annotated[list[float] | None, typer.Option("--cf", help="Capacity factor, repeatable (default: 1.0 1.25 2.0).")]
PlacementOpt = Annotated[list[Placement] | None, typer.Option("--placement", help="Expert placement, repeatable (default: both).")]
RedundantOpt = Annotated[int | None, typer.Option(help="Spare expert slots for replicas in `balanced` (default: one per device).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@simulate_app.command("cache")
def cache_command(
    trace: TraceArg,
    policy: PolicyOpt = None,
    capacity: CapacityOpt = None,
    reset_per_document: ResetOpt = False,
    shuffled: ShuffledOpt = True,
    seed: SeedOpt = 0,
    expert_bytes: ExpertBytesOpt = None,
    dtype_bytes: DtypeBytesOpt = 2.0,
    per_layer: PerLayerOpt = False,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Expert-cache hit rate per policy, layer and cache size (experts kept resident per layer).

        routelens simulate cache trace/

        routelens simulate cache trace/ --policy lru --policy belady --capacity 2 --capacity 4 --json cache.json

        routelens simulate cache trace/ --reset-per-document --expert-bytes 352321536
    """
    from routelens.simulate import cache_with_control, simulate_cache

    _check_json_path(json_path)
    kwargs = dict(policies=tuple(policy or Policy), capacities=capacity, reset_per_document=reset_per_document,
                  expert_bytes=expert_bytes, dtype_bytes=dtype_bytes, seed=seed, progress=not quiet)  # fmt: skip
    result = cache_with_control(trace, **kwargs) if shuffled else simulate_cache(trace, **kwargs)
    print_cache(result, per_layer=per_layer)
    _write_json(json_path, result)


@simulate_app.command("balance")
def balance_command(
    trace: TraceArg,
    devices: DevicesOpt = 8,
    batch_tokens: BatchOpt = 4096,
    cf: CfOpt = None,
    placement: PlacementOpt = None,
    redundant_experts: RedundantOpt = None,
    seed: SeedOpt = 0,
    json_path: JsonOpt = None,
) -> None:
    """Expert-parallel load: assignments dropped under each capacity factor and max/mean device load,
    in trace order and in a shuffled order.

        routelens simulate balance trace/ --devices 8 --batch-tokens 4096

        routelens simulate balance trace/ -D 4 -B 1024 --cf 1.0 --cf 1.25 --placement round_robin --json balance.json
    """
    from routelens.simulate import simulate_balance

    _check_json_path(json_path)
    result = simulate_balance(trace, devices, batch_tokens, tuple(cf or (1.0, 1.25, 2.0)), tuple(placement or Placement),
                              redundant_experts=redundant_experts, seed=seed)  # fmt: skip
    print_balance(result)
    _write_json(json_path, result)


@simulate_app.command("all")
def all_command(
    trace: TraceArg,
    json_path: Annotated[Path, typer.Option("--json", help="Write cache and balance results to this JSON file.")],
    policy: PolicyOpt = None,
    capacity: CapacityOpt = None,
    reset_per_document: ResetOpt = False,
    expert_bytes: ExpertBytesOpt = None,
    dtype_bytes: DtypeBytesOpt = 2.0,
    devices: DevicesOpt = 8,
    batch_tokens: BatchOpt = 4096,
    cf: CfOpt = None,
    placement: PlacementOpt = None,
    redundant_experts: RedundantOpt = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Both simulators with their shuffled controls, into one JSON file (keys `cache*`, `balance*`).

        routelens simulate all trace/ --json simulate.json

        routelens simulate all trace/ --json simulate.json --devices 4 --batch-tokens 1024 --dtype-bytes 1
    """
    from routelens.simulate import simulate_all

    _check_json_path(json_path)
    result = simulate_all(
        trace, policies=tuple(policy or Policy), capacities=capacity, reset_per_document=reset_per_document,
        expert_bytes=expert_bytes, dtype_bytes=dtype_bytes, devices=devices, batch_tokens=batch_tokens,
        cfs=tuple(cf or (1.0, 1.25, 2.0)), placements=tuple(placement or Placement),
        redundant_experts=redundant_experts, seed=seed, progress=not quiet,
    )  # fmt: skip
    print_cache(result, per_layer=False)
    print_balance(result)
    _write_json(json_path, result)


# -- output --------------------------------------------------------------------------------------
def print_cache(result: dict, *, per_layer: bool) -> None:
    """Hit rate per capacity and policy; the first policy also in shuffled order, misses and MB per token."""
    cache, detail, meta = result["cache"], result["cache_detail"], result["cache_meta"]
    shuffled, gap = result.get("cache_shuffled"), result.get("cache_gap")
    first = next(iter(cache))
    layers = list(cache[first])
    for group in [[layer] for layer in layers] if per_layer else [layers]:
        where = f"layer {group[0]}" if per_layer else f"mean over {len(group)} layers"
        table = Table(title=f"Expert-cache hit rate ({where}; {meta['tokens']:,} tokens, top-{meta['top_k']} "
                            f"of {meta['num_experts']})", title_justify="left")  # fmt: skip
        columns = ["cached", *cache]
        columns += [f"{first} shuffled"] if shuffled else []
        columns += ["belady-lru"] if gap else []
        columns += [f"{first} miss/tok"] + ([f"{first} bytes/tok"] if meta["expert_bytes"] else [])
        for name in columns:
            table.add_column(name, justify="right", style="dim" if name.endswith("shuffled") else None)
        for c in map(str, meta["capacities"]):
            row = [c] + [f"{_mean(cache[p], group, c):.3f}" for p in cache]
            row += [f"{_mean(shuffled[first], group, c):.3f}"] if shuffled else []
            row += [f"{_mean(gap, group, c):+.3f}"] if gap else []
            row.append(f"{_mean(detail[first], group, c, 'misses_per_token'):.3f}")
            if meta["expert_bytes"]:
                row.append(_human_bytes(_mean(detail[first], group, c, "bytes_per_token")))
            table.add_row(*row)
        console.print(table)
    if not meta["expert_bytes"]:
        console.print("[dim]bytes moved unknown: the manifest has no expert_params; pass --expert-bytes.[/]")


def print_balance(result: dict) -> None:
    meta, shuffled = result["balance_meta"], result.get("balance_shuffled")
    table = Table(title=f"Expert-parallel load ({meta['devices']} devices, batches of {meta['batch_tokens']:,} tokens, "
                        f"{meta['batches']:,} batches, mean over layers)", title_justify="left")  # fmt: skip
    for name in ["placement", "CF", "cap.", "dropped", "max/mean"]:
        table.add_column(name, justify="left" if name == "placement" else "right")
    if shuffled:
        table.add_column("dropped shuffled", justify="right", style="dim")
        table.add_column("max/mean shuffled", justify="right", style="dim")
    for placement, by_cf in result["balance"].items():
        for cf, v in by_cf.items():
            row = [placement, cf, str(meta["capacity_per_expert"][cf]), f"{v['dropped']:.2%}", f"{v['imbalance_max_mean']:.3f}"]
            if shuffled:
                s = shuffled[placement][cf]
                row += [f"{s['dropped']:.2%}", f"{s['imbalance_max_mean']:.3f}"]
            table.add_row(*row)
    console.print(table)


def _mean(by_layer: dict, layers: list[str], capacity: str, key: str | None = None) -> float:
    values = [by_layer[layer][capacity] if key is None else by_layer[layer][capacity][key] for layer in layers]
    return sum(values) / len(values)


def _human_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _check_json_path(path: Path | None) -> None:
    if path is not None and not path.parent.is_dir():
        raise RoutelensError(f"--json {path}: folder {path.parent} does not exist; create it or choose another path.")


def _write_json(path: Path | None, result: dict) -> None:
    if path is None:
        return
    from routelens.atomic import write_json

    write_json(path, result, indent=2, newline=True, allow_nan=True)  # the formatting of earlier versions
    console.print(f"[green]wrote[/] {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")
