"""`routelens trace` and `routelens info`: record routing traces and summarise them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import BareJsonCommand, console, to_stdout
from routelens.trace.config import DeviceMap


def trace_command(
    model: Annotated[str, typer.Argument(help="Model directory (with config.json) or hub id.")],
    corpus: Annotated[
        list[str],
        typer.Option(
            "--corpus", "-c",
            help="NAME=PATH, repeatable. PATH: .txt (blank-line separated documents), .jsonl (field text), "
            ".parquet (column text), .conllu (gold UPOS), or hf:DATASET\\[/CONFIG]:SPLIT\\[:COLUMN].",
        ),
    ],  # fmt: skip
    out: Annotated[Path, typer.Option("--out", "-o", help="Trace directory to write (resumed if it holds this trace).")],
    seq_len: Annotated[int, typer.Option(help="Window length in tokens; longer documents are cut into windows.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    max_tokens: Annotated[int | None, typer.Option(help="At most this many tokens per corpus.")] = None,
    store_probs: Annotated[bool, typer.Option("--store-probs", help="Also store the full router distribution.")] = False,
    store_expert_norms: Annotated[bool, typer.Option("--store-expert-norms", help="Also store each chosen expert's "
                                                     "output norm before weighting (for `routelens importance` reap; "
                                                     "k more expert passes).")] = False,
    lookahead: Annotated[int, typer.Option("--lookahead", help="Also store, for each MoE layer and d = 1..D, the top-k "
                                           "the router of the MoE layer d steps later picks from this layer's "
                                           "router input (for `simulate cache --policy lookahead`); 0: off.")] = 0,
    generate: Annotated[int, typer.Option("--generate", help="Each document is a prompt: decode this many tokens "
                                          "with the KV cache and record them too (rows get phase prefill / "
                                          "decode); 0: off (teacher-forced text).")] = 0,
    temperature: Annotated[float, typer.Option(help="With --generate: 0 greedy, else sampling temperature.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="With --generate and --temperature > 0: nucleus mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="With --generate and --temperature > 0: sampling seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda:N).")] = "cpu",
    dtype: Annotated[str, typer.Option(help="Model dtype: auto, float32, bfloat16, float16.")] = "auto",
    weights_dtype: Annotated[str, typer.Option(help="Stored weight precision: float16 or float32.")] = "float16",
    tagger: Annotated[str | None, typer.Option(help="Tag raw text with UPOS: spacy or spacy:MODEL (routelens[pos]).")] = None,
    shard_tokens: Annotated[int, typer.Option(help="Target rows per Parquet shard.")] = 1 << 18,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a trace of another model or corpus in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Trace on Ray (routelens[ray]): a pool of model actors; "
                                      "starts a local Ray instance unless --ray-address is given.")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (implies --ray): auto (the cluster "
                                                    "`ray start` made here), HOST:PORT or ray://HOST:10001.")] = None,
    ray_workers: Annotated[int | None, typer.Option(help="Model actors (default: one per GPU of the cluster, "
                                                    "else one per CPU but one).")] = None,
    ray_gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per model actor (default: 1 when the "
                                                              "cluster has GPUs, else 0: CPU actors; above 1 "
                                                              "the model is spread over the actor's GPUs).")] = None,
    device_map: Annotated[DeviceMap | None, typer.Option(help="Spread a model larger than one device over the GPUs, "
                                                         "CPU memory and disk (accelerate); see docs/scaling.md.")] = None,
    max_memory: Annotated[str | None, typer.Option(help="Memory per device for --device-map, e.g. "
                                                   "0=70GiB,1=70GiB,cpu=200GiB.")] = None,
    offload_folder: Annotated[Path | None, typer.Option(help="Folder for the weights that fit no device "
                                                        "(--device-map).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Load a model that ships its own "
                                                    "code (auto_map in config.json): runs that code here.")] = False,
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
    from routelens.trace import TraceConfig, summarize, trace

    config = TraceConfig(
        seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens, store_probs=store_probs, device=device,
        store_expert_norms=store_expert_norms, lookahead=lookahead,
        dtype=dtype, weights_dtype=weights_dtype, tagger=tagger, shard_tokens=shard_tokens, overwrite=overwrite,
        progress=not quiet, ray=ray_address or ("local" if ray else None), ray_workers=ray_workers,
        ray_gpus_per_worker=ray_gpus_per_worker, device_map=device_map, max_memory=max_memory,
        offload_folder=offload_folder, trust_remote_code=trust_remote_code,
        generate=generate, temperature=temperature, top_p=top_p, seed=seed,
    )  # fmt: skip
    from routelens.lock import output_lock

    # Two runs into one --out would mix their shards (or one --overwrite replace the other's trace
    # while both report success): the second is refused naming the first's PID.
    with output_lock(out, what="trace"):
        tr = trace(model, corpus, out, config)
    info = summarize(tr.path)
    console.print(
        f"[green]traced[/] {info['tokens']:,} tokens x {len(info['moe_layers'])} MoE layers "
        f"(top-{info['top_k']} of {info['num_experts']}) -> {tr.path} "
        f"({info['bytes_per_token_layer']:.2f} bytes per token-layer)"
    )


def info_command(
    path: Annotated[Path, typer.Argument(help="Trace directory.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the summary as JSON to this file; - or a bare --json: stdout.")
    ] = None,
) -> None:
    """Summarise a trace: tokens per domain, layers, experts, storage per token-layer.

        routelens info trace/
    """
    from routelens.trace.summary import dumps, summarize

    info = summarize(path)
    if to_stdout(json_out):
        console.print_json(dumps(info))
        return
    if json_out is not None:
        from routelens.atomic import write_text

        write_text(json_out, dumps(info) + "\n")
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
        ("storage", f"{info['bytes'] / 1e6:.2f} MB in {info['shards']} shards, "
                    f"{info['bytes_per_token_layer']:.2f} bytes per token-layer"),
        ("complete", "yes" if info["complete"] else "[yellow]no: re-run the trace command to finish it[/]"),
    ]  # fmt: skip
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
