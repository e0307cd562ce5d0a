"""`routelens import vllm|sglang FILE --model MODEL_DIR --out TRACE`: routing recorded by a serving
engine as a routelens trace (a thin layer over `routelens.engines.import_engine`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console, new_app
from routelens.cli.options import cli_config, config_option
from routelens.engines.importer import ImportConfig

import_app = new_app("Import the routing a serving engine recorded (vLLM, SGLang) as a trace.")

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="The model the engine served: a folder with its config.json "
                                        "and tokenizer (weights are not read).")]  # fmt: skip
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Trace directory to write.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _run(engine: str, file: Path, model: Path, out: Path, domain, shard_tokens, overwrite, trust_remote_code, quiet) -> None:
    from routelens.engines import import_engine

    config = cli_config(ImportConfig, domain=domain, shard_tokens=shard_tokens, overwrite=overwrite,
                        trust_remote_code=trust_remote_code, progress=not quiet)  # fmt: skip
    tr = import_engine(engine, file, model, out, config)
    console.print(f"[green]wrote[/] {out}: {tr.num_tokens:,} rows of {tr.manifest['totals']['documents']:,} requests, "
                  f"{len(tr.layers)} MoE layers, top-{tr.top_k} of {tr.num_experts} (no weights: engines record experts only)")  # fmt: skip


@import_app.command("vllm")
def vllm_command(
    file: Annotated[Path, typer.Argument(help="JSON lines, one request a line: prompt_token_ids, output_token_ids, "
                                         "prompt_routed_experts, routed_experts (tokens, layers, k); domain, request_id optional.")],  # fmt: skip
    model: ModelOpt,
    out: OutOpt,
    domain: str | None = config_option(ImportConfig, "domain", "--domain"),
    shard_tokens: int = config_option(ImportConfig, "shard_tokens", "--shard-tokens"),
    overwrite: bool = config_option(ImportConfig, "overwrite", "--overwrite"),
    trust_remote_code: bool = config_option(ImportConfig, "trust_remote_code", "--trust-remote-code"),
    quiet: QuietOpt = False,
) -> None:
    """vLLM's routed experts (enable_return_routed_experts), saved as JSON lines.

    Layers are the MoE layers, or every decoder layer with -1 in the dense ones (read from the
    model's config). Prompt rows get phase prefill, generated ones decode. Docs: docs/engines.md.

        routelens import vllm requests.jsonl --model Qwen3-30B-A3B/ --out trace-vllm/ --domain chat
    """
    _run("vllm", file, model, out, domain, shard_tokens, overwrite, trust_remote_code, quiet)


@import_app.command("sglang")
def sglang_command(
    file: Annotated[Path, typer.Argument(help="JSON lines of responses with meta_info.routed_experts (base64 int32), "
                                         "or the expert-distribution recorder's per_token dump (.pt).")],  # fmt: skip
    model: ModelOpt,
    out: OutOpt,
    domain: str | None = config_option(ImportConfig, "domain", "--domain"),
    shard_tokens: int = config_option(ImportConfig, "shard_tokens", "--shard-tokens"),
    overwrite: bool = config_option(ImportConfig, "overwrite", "--overwrite"),
    trust_remote_code: bool = config_option(ImportConfig, "trust_remote_code", "--trust-remote-code"),
    quiet: QuietOpt = False,
) -> None:
    """SGLang's routed experts (--enable-return-routed-experts) or its recorder's per-token dump.

    The recorder's physical ids are mapped to logical ones with its last_physical_to_logical_map;
    a .pt file is read with torch.load(weights_only=True) only. Docs: docs/engines.md.

        routelens import sglang responses.jsonl --model DeepSeek-V3/ --out trace-sglang/

        routelens import sglang expert_distribution_recorder.pt --model DeepSeek-V3/ --out trace-rec/
    """
    _run("sglang", file, model, out, domain, shard_tokens, overwrite, trust_remote_code, quiet)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
