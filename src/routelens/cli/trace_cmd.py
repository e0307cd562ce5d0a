"""`routelens trace` and `routelens info`: record routing traces and summarise them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import BareJsonCommand, console, import_notes, to_stdout
from routelens.cli.options import cli_config, config_option
from routelens.trace.config import DeviceMap, TraceConfig


def trace_command(
    model: Annotated[str, typer.Argument(help="Model directory (with config.json) or hub id.")],
    corpus: Annotated[
        list[str],
        typer.Option(
            "--corpus",
            "-c",
            help="NAME=PATH, repeatable. PATH: .txt (blank-line separated documents), .jsonl (field text), "
            ".parquet (column text), .conllu (gold UPOS), or hf:DATASET\\[/CONFIG]:SPLIT\\[:COLUMN].",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Trace directory to write (resumed if it holds this trace).")
    ],
    seq_len: int | None = config_option(TraceConfig, "seq_len", "--seq-len"),
    batch_size: int = config_option(TraceConfig, "batch_size", "--batch-size"),
    max_tokens: int | None = config_option(TraceConfig, "max_tokens", "--max-tokens"),
    store_probs: bool = config_option(TraceConfig, "store_probs", "--store-probs"),
    store_expert_norms: bool = config_option(TraceConfig, "store_expert_norms", "--store-expert-norms"),
    lookahead: int = config_option(TraceConfig, "lookahead", "--lookahead"),
    generate: int = config_option(TraceConfig, "generate", "--generate"),
    temperature: float = config_option(TraceConfig, "temperature", "--temperature"),
    top_p: float = config_option(TraceConfig, "top_p", "--top-p"),
    seed: int = config_option(TraceConfig, "seed", "--seed"),
    device: str = config_option(TraceConfig, "device", "--device"),
    dtype: str = config_option(TraceConfig, "dtype", "--dtype"),
    weights_dtype: str = config_option(TraceConfig, "weights_dtype", "--weights-dtype"),
    tagger: str | None = config_option(TraceConfig, "tagger", "--tagger"),
    shard_tokens: int = config_option(TraceConfig, "shard_tokens", "--shard-tokens"),
    overwrite: bool = config_option(TraceConfig, "overwrite", "--overwrite"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Check the first batch's recorded routing "
            "against the router's own choice and the MoE blocks' own outputs before "
            "anything is written (--no-verify: record unchecked; the manifest says so).",
        ),
    ] = True,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Trace on Ray (routelens[ray]): a pool of model actors; "
            "starts a local Ray instance unless --ray-address is given.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (implies --ray): auto (the cluster "
            "`ray start` made here), HOST:PORT or ray://HOST:10001."
        ),
    ] = None,
    ray_workers: int | None = config_option(TraceConfig, "ray_workers", "--ray-workers"),
    ray_gpus_per_worker: float | None = config_option(TraceConfig, "ray_gpus_per_worker", "--ray-gpus-per-worker"),
    device_map: DeviceMap | None = config_option(TraceConfig, "device_map", "--device-map"),
    max_memory: str | None = config_option(TraceConfig, "max_memory", "--max-memory"),
    offload_folder: Path | None = config_option(TraceConfig, "offload_folder", "--offload-folder"),
    trust_remote_code: bool = config_option(TraceConfig, "trust_remote_code", "--trust-remote-code"),
) -> None:
    """Run a MoE model over corpora and record, for every token and MoE layer, the experts the router
    chose and the weights the model applied.

    Examples:

        routelens trace ./my-moe --corpus web=c4.txt --corpus code=github.txt --out trace/ --max-tokens 100000

        routelens trace ./my-moe --corpus ud=en_ewt-ud-dev.conllu --out trace-pos/ --seq-len 256

        routelens trace ./my-moe --corpus web=c4.jsonl --out trace/ --ray                      # local Ray, all GPUs

        routelens trace ./my-moe --corpus web=c4.jsonl --out /nfs/trace/ --ray-address auto --ray-workers 16

        routelens trace ./big-moe --corpus web=c4.jsonl --out trace/ --device-map auto --max-memory 0=70GiB,1=70GiB,cpu=200GiB

        routelens trace ./my-moe --corpus prompts=prompts.jsonl --out gen/ --generate 128 --temperature 0.7 --top-p 0.9
    """
    from routelens.trace import summarize, trace

    config = cli_config(
        TraceConfig,
        seq_len=seq_len,
        batch_size=batch_size,
        max_tokens=max_tokens,
        store_probs=store_probs,
        device=device,
        store_expert_norms=store_expert_norms,
        lookahead=lookahead,
        dtype=dtype,
        weights_dtype=weights_dtype,
        tagger=tagger,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        progress=not quiet,
        ray=ray_address or ("local" if ray else None),
        ray_workers=ray_workers,
        ray_gpus_per_worker=ray_gpus_per_worker,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=None if offload_folder is None else str(offload_folder),
        trust_remote_code=trust_remote_code,
        generate=generate,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        verify=verify,
    )
    tr = trace(model, corpus, out, config)  # locks --out: a second run into it is refused naming the first
    info = summarize(tr.path)
    console.print(
        f"[green]traced[/] {info['tokens']:,} tokens x {len(info['moe_layers'])} MoE layers "
        f"(top-{info['top_k']} of {info['num_experts']}) -> {tr.path} "
        f"({info['bytes_per_token_layer']:.2f} bytes per token-layer)"
    )


def _verified(info: dict) -> str:
    on = f" on transformers {info['transformers']}" if info.get("transformers") else ""
    batches = "; batches without padding (padding moves this family's routing)" if info.get("unpadded") else ""
    if info.get("verified") is None:
        return f"[yellow]not recorded (a trace from before the first-batch check){on}[/]"
    if info["verified"]:
        return f"yes: the first batch's routing matched the model's own{on}{batches}"
    return f"[yellow]no: traced with --no-verify{on}[/]{batches}"


def info_command(
    path: Annotated[Path, typer.Argument(help="Trace directory.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the summary as JSON to this file; - or a bare --json: stdout.")
    ] = None,
) -> None:
    """Summarise a trace: tokens per domain, layers, experts, storage per token-layer.

    routelens info trace/
    """
    from routelens.trace.summary import dumps, summarize, write_summary

    info = summarize(path)
    if to_stdout(json_out):
        console.print_json(dumps(info))
        return
    if json_out is not None:
        write_summary(info, json_out)
        console.print(f"[green]wrote[/] {json_out}")
        return
    table = Table(title=f"routelens trace {info['path']}", show_header=False, title_justify="left")
    rows = [
        ("model", f"{info['model']} ({info['architecture']})"),
        ("routing", f"{info['family']}: {info['routing_rule']}"),
        ("experts", f"top-{info['top_k']} of {info['num_experts']}"),
        ("MoE layers", f"{len(info['moe_layers'])}: {_ranges(info['moe_layers'])}"),
        ("tokens", f"{info['tokens']:,} in {info['documents'] or '?'} documents"),
        *((f"  {name}", f"{n:,}" if n is not None else "?") for name, n in info["domains"].items()),
        ("columns", ", ".join(info["columns"])),
        (
            "storage",
            f"{info['bytes'] / 1e6:.2f} MB in {info['shards']} shards, "
            f"{info['bytes_per_token_layer']:.2f} bytes per token-layer",
        ),
        ("complete", "yes" if info["complete"] else "[yellow]no: re-run the trace command to finish it[/]"),
        ("verified", _verified(info)),
    ]
    if info.get("import") is not None:
        notes = import_notes(info["import"])
        rows.append(("import", "; ".join(notes) if notes else "no request left out, no anomaly"))
    for key, value in rows:
        table.add_row(f"[bold]{key}", value)
    console.print(table)


def _ranges(layers: list[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2, 5, 7-8'."""
    out, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            out.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_command)
    app.command("info", cls=BareJsonCommand)(info_command)
