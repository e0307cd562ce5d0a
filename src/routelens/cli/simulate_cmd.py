"""`routelens simulate cache|balance|distinct|all`: systems simulators over a routing trace.

Thin layer over `routelens.simulate`: parse options, run, print rich tables, write --json.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import console, new_app, print_json, to_stdout
from routelens.cli.options import cli_config, config_option
from routelens.simulate.balance import BalanceConfig
from routelens.simulate.cache import CacheConfig
from routelens.simulate.distinct import DistinctConfig
from routelens.simulate.output import FORMAT
from routelens.simulate.policies import Placement, Policy

simulate_app = new_app("Simulate expert caching (offloading) and expert-parallel load over a trace.")

TraceArg = Annotated[Path, typer.Argument(help="Trace directory written by `routelens trace`.")]
JSON_HELP = "Write the results as JSON to this file (atomically); - for stdout (then no tables)."
JsonOpt = Annotated[Path | None, typer.Option("--json", help=JSON_HELP)]
ShuffledOpt = Annotated[
    bool, typer.Option("--shuffled/--no-shuffled", help="Also replay a shuffled order (locality control).")
]
PerLayerOpt = Annotated[
    bool, typer.Option("--per-layer", help="Print one table per layer instead of the mean over layers.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]

# Options whose default and help are the configs' fields (one place: routelens.simulate).
policy_option = partial(config_option, CacheConfig, "policies", "--policy", "-p")
capacity_option = partial(config_option, CacheConfig, "capacities", "--capacity", "-C")
reset_option = partial(config_option, CacheConfig, "reset_per_document", "--reset-per-document")
expert_bytes_option = partial(config_option, CacheConfig, "expert_bytes", "--expert-bytes")
dtype_bytes_option = partial(config_option, CacheConfig, "dtype_bytes", "--dtype-bytes")
devices_option = partial(config_option, BalanceConfig, "devices", "--devices", "-D")
batch_option = partial(config_option, BalanceConfig, "batch_tokens", "--batch-tokens", "-B")
cf_option = partial(config_option, BalanceConfig, "cfs", "--cf")
placement_option = partial(config_option, BalanceConfig, "placements", "--placement")
redundant_option = partial(config_option, BalanceConfig, "redundant_experts", "--redundant-experts")
seed_option = partial(config_option, CacheConfig, "seed", "--seed")
pin_option = partial(config_option, CacheConfig, "pin", "--pin")
distance_option = partial(config_option, CacheConfig, "lookahead_distance", "--lookahead-distance")
bandwidth_option = partial(config_option, CacheConfig, "bandwidth_gbps", "--bandwidth")
budget_option = partial(config_option, CacheConfig, "budget_bytes", "--budget-bytes")
decode_option = partial(config_option, BalanceConfig, "decode_batch", "--decode-batch")


@simulate_app.command("cache")
def cache_command(
    trace: TraceArg,
    policy: list[Policy] | None = policy_option(),
    capacity: list[int] | None = capacity_option(),
    reset_per_document: bool = reset_option(),
    shuffled: ShuffledOpt = True,
    seed: int = seed_option(),
    expert_bytes: int | None = expert_bytes_option(),
    dtype_bytes: float = dtype_bytes_option(),
    pin: int | None = pin_option(),
    lookahead_distance: int = distance_option(),
    bandwidth: float | None = bandwidth_option(),
    budget_bytes: list[int] | None = budget_option(),
    per_layer: PerLayerOpt = False,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Expert-cache hit rate and experts loaded per token, per policy, layer and cache size
    (experts kept resident per layer).

        routelens simulate cache trace/

        routelens simulate cache trace/ --policy lru --policy belady --capacity 2 --capacity 4 --json cache.json

        routelens simulate cache trace/ --reset-per-document --expert-bytes 352321536 --bandwidth 25

        routelens simulate cache trace/ --pin 2 --budget-bytes 8000000000 --policy lru   # which layers deserve the memory

        routelens simulate cache trace/ --policy lru --policy lookahead   # a trace made with --lookahead 1
    """
    from routelens.simulate import cache_with_control, simulate_cache

    config = _cache_config(
        policy,
        capacity,
        reset_per_document,
        expert_bytes,
        dtype_bytes,
        seed,
        quiet,
        pin,
        lookahead_distance,
        bandwidth,
        budget_bytes,
    )
    result = (cache_with_control if shuffled else simulate_cache)(trace, config, json_path=_file(json_path))
    if not _emit_stdout(json_path, result):
        print_cache(result, per_layer=per_layer)
        _wrote(json_path)


@simulate_app.command("balance")
def balance_command(
    trace: TraceArg,
    devices: int = devices_option(),
    batch_tokens: int = batch_option(),
    cf: list[float] | None = cf_option(),
    placement: list[Placement] | None = placement_option(),
    redundant_experts: int | None = redundant_option(),
    decode_batch: int | None = decode_option(),
    seed: int = seed_option(),
    json_path: JsonOpt = None,
) -> None:
    """Expert-parallel load: assignments dropped under each capacity factor and max/mean device load,
    in trace order and in a shuffled order (and with --decode-batch, B sequences decoding together).

        routelens simulate balance trace/ --devices 8 --batch-tokens 4096

        routelens simulate balance trace/ -D 4 -B 1024 --cf 1.0 --cf 1.25 --placement round_robin --json balance.json

        routelens simulate balance trace/ -D 8 -B 64 --decode-batch 64
    """
    from routelens.simulate import simulate_balance

    result = simulate_balance(
        trace,
        _balance_config(devices, batch_tokens, cf, placement, redundant_experts, seed, decode_batch),
        json_path=_file(json_path),
    )
    if not _emit_stdout(json_path, result):
        print_balance(result)
        _wrote(json_path)


@simulate_app.command("distinct")
def distinct_command(
    trace: TraceArg,
    batch: int = config_option(DistinctConfig, "batch", "--batch", "-B"),
    json_path: JsonOpt = None,
) -> None:
    """Distinct experts each layer touches per batch (what an offloading server must hold per step):
    B consecutive tokens, and B sequences decoding together, against uniform random routing.

        routelens simulate distinct trace/ --batch 16

        routelens simulate distinct trace/ -B 64 --json distinct.json
    """
    from routelens.simulate.distinct import simulate_distinct

    result = simulate_distinct(trace, cli_config(DistinctConfig, batch=batch), json_path=_file(json_path))
    if not _emit_stdout(json_path, result):
        print_distinct(result)
        _wrote(json_path)


@simulate_app.command("all")
def all_command(
    trace: TraceArg,
    json_path: Annotated[
        Path, typer.Option("--json", help=JSON_HELP.replace("the results", "cache and balance results"))
    ],
    policy: list[Policy] | None = policy_option(),
    capacity: list[int] | None = capacity_option(),
    reset_per_document: bool = reset_option(),
    expert_bytes: int | None = expert_bytes_option(),
    dtype_bytes: float = dtype_bytes_option(),
    seed: int = seed_option(),  # of both shuffled controls
    devices: int = devices_option(),
    batch_tokens: int = batch_option(),
    cf: list[float] | None = cf_option(),
    placement: list[Placement] | None = placement_option(),
    redundant_experts: int | None = redundant_option(),
    pin: int | None = pin_option(),
    bandwidth: float | None = bandwidth_option(),
    decode_batch: int | None = decode_option(),
    quiet: QuietOpt = False,
) -> None:
    """Both simulators with their shuffled controls, into one JSON file (keys `cache*`, `balance*`).

    routelens simulate all trace/ --json simulate.json

    routelens simulate all trace/ --json simulate.json --devices 4 --batch-tokens 1024 --dtype-bytes 1
    """
    from routelens.simulate import simulate_all

    cache = _cache_config(
        policy, capacity, reset_per_document, expert_bytes, dtype_bytes, seed, quiet, pin, None, bandwidth, None
    )
    balance = _balance_config(devices, batch_tokens, cf, placement, redundant_experts, seed, decode_batch)
    result = simulate_all(trace, cache, balance, json_path=_file(json_path))
    if not _emit_stdout(json_path, result):
        print_cache(result, per_layer=False)
        print_balance(result)
        _wrote(json_path)


def _cache_config(
    policy,
    capacity,
    reset_per_document,
    expert_bytes,
    dtype_bytes,
    seed,
    quiet,
    pin=None,
    lookahead_distance=None,
    bandwidth=None,
    budget_bytes=None,
) -> CacheConfig:
    extra = {} if lookahead_distance is None else {"lookahead_distance": lookahead_distance}
    return cli_config(
        CacheConfig,
        policies=policy,
        capacities=capacity,
        reset_per_document=reset_per_document,
        expert_bytes=expert_bytes,
        dtype_bytes=dtype_bytes,
        seed=seed,
        progress=not quiet,
        pin=pin,
        bandwidth_gbps=bandwidth,
        budget_bytes=budget_bytes,
        **extra,
    )


def _balance_config(devices, batch_tokens, cf, placement, redundant_experts, seed, decode_batch=None) -> BalanceConfig:
    return cli_config(
        BalanceConfig,
        devices=devices,
        batch_tokens=batch_tokens,
        cfs=cf,
        placements=placement,
        redundant_experts=redundant_experts,
        seed=seed,
        decode_batch=decode_batch,
    )


# -- output --------------------------------------------------------------------------------------
def print_cache(result: dict, *, per_layer: bool) -> None:
    """Hit rate per capacity and policy; the first policy also in shuffled order, misses and MB per token."""
    cache, detail, meta = result["cache"], result["cache_detail"], result["cache_meta"]
    shuffled, gap = result.get("cache_shuffled"), result.get("cache_gap")
    first = next(iter(cache))
    layers = list(cache[first])
    for group in [[layer] for layer in layers] if per_layer else [layers]:
        where = f"layer {group[0]}" if per_layer else f"mean over {len(group)} layers"
        table = Table(
            title=f"Expert-cache hit rate ({where}; {meta['tokens']:,} tokens, top-{meta['top_k']} "
            f"of {meta['num_experts']})",
            title_justify="left",
        )
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
        print_loads(result, group, where)
    if result.get("cache_load_time"):
        table = Table(title=f"Load ms/token at {meta['bandwidth_gbps']:g} GB/s, all layers", title_justify="left")
        for name in ["cached", *result["cache_load_time"]]:
            table.add_column(name, justify="right")
        for c in map(str, meta["capacities"]):
            table.add_row(c, *[f"{by_c[c] * 1e3:.3f}" for by_c in result["cache_load_time"].values()])
        console.print(table)
    if result.get("cache_budget"):
        print_budget(result["cache_budget"])
    if not meta["expert_bytes"]:
        console.print("[dim]bytes moved unknown: the manifest has no expert_params; pass --expert-bytes.[/]")


def print_budget(budget: dict) -> None:
    """Per-layer split of each total against the uniform split at the same bytes."""
    table = Table(
        title="Expert memory split over layers: by hit curves (best) vs uniform, same bytes", title_justify="left"
    )
    for name in [
        "policy",
        "total",
        "slots",
        "best hit",
        "uniform hit",
        "best loads/tok",
        "uniform loads/tok",
        "best split",
    ]:
        table.add_column(name, justify="left" if name in ("policy", "best split") else "right")
    for policy, by_total in budget.items():
        for total, row in by_total.items():
            best, uniform = row["best"], row["uniform"]
            table.add_row(
                policy,
                _human_bytes(float(total)),
                str(row["slots"]),
                f"{best['hit_rate']:.3f}",
                f"{uniform['hit_rate']:.3f}",
                f"{best['loads_per_token']:.3f}",
                f"{uniform['loads_per_token']:.3f}",
                " ".join(map(str, best["split"].values())),
            )
    console.print(table)


def print_distinct(result: dict) -> None:
    meta = result["distinct_meta"]
    table = Table(
        title=f"Distinct experts per batch of {meta['batch']} (of {meta['num_experts']}, top-{meta['top_k']}; "
        f"uniform routing: {meta['uniform']:.2f})",
        title_justify="left",
    )
    for name in ["layer", "mean", "p95", "max", "decode mean", "decode p95", "decode max"]:
        table.add_column(name, justify="right")
    for layer, v in result["distinct"].items():
        d = result["distinct_decode"][layer]
        cells = [v["mean"], v["p95"], v["max"], d["mean"], d["p95"], d["max"]]
        table.add_row(layer, *["–" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x) for x in cells])
    console.print(table)


def print_loads(result: dict, layers: list[str], where: str) -> None:
    """Experts loaded per token for every policy (demand misses + prefetch loads), beside the hit
    rates above: a prefetching policy can beat Belady's hits only by loading more."""
    loads, meta = result.get("cache_loads"), result["cache_meta"]
    if not loads:
        return
    table = Table(title=f"Experts loaded per token, demand misses + prefetch loads ({where})", title_justify="left")
    for name in ["cached", *loads]:
        table.add_column(name, justify="right")
    for c in map(str, meta["capacities"]):
        table.add_row(c, *[f"{_mean(loads[p], layers, c):.3f}" for p in loads])
    console.print(table)


def print_balance(result: dict) -> None:
    meta, shuffled = result["balance_meta"], result.get("balance_shuffled")
    table = Table(
        title=f"Expert-parallel load ({meta['devices']} devices, batches of {meta['batch_tokens']:,} tokens, "
        f"{meta['batches']:,} batches, mean over layers)",
        title_justify="left",
    )
    for name in ["placement", "CF", "cap.", "dropped", "max/mean"]:
        table.add_column(name, justify="left" if name == "placement" else "right")
    decode = result.get("balance_decode")
    if shuffled:
        table.add_column("dropped shuffled", justify="right", style="dim")
        table.add_column("max/mean shuffled", justify="right", style="dim")
    if decode:
        table.add_column(f"dropped decode x{meta['decode_batch']}", justify="right")
        table.add_column("max/mean decode", justify="right")
    for placement, by_cf in result["balance"].items():
        for cf, v in by_cf.items():
            row = [
                placement,
                cf,
                str(meta["capacity_per_expert"][cf]),
                f"{v['dropped']:.2%}",
                f"{v['imbalance_max_mean']:.3f}",
            ]
            for other in (shuffled, decode):
                if other:
                    s = other[placement][cf]
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


def _file(path: Path | None) -> Path | None:
    """The JSON file the simulator itself checks first and writes; None for none or `-` (stdout)."""
    return None if path is None or to_stdout(path) else path


def _emit_stdout(path: Path | None, result: dict) -> bool:
    """`--json -`: the JSON alone on stdout, as the file would hold it; True when done so."""
    if to_stdout(path):
        print_json(result, **FORMAT)
    return to_stdout(path)


def _wrote(path: Path | None) -> None:
    if path is not None:
        console.print(f"[green]wrote[/] {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")
