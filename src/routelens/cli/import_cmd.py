"""`routelens import vllm|sglang FILE --model MODEL_DIR --out TRACE`: routing recorded by a serving
engine as a routelens trace (a thin layer over `routelens.engines.import_engine`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console, import_notes, new_app
from routelens.cli.options import cli_config, config_option
from routelens.engines.importer import ImportConfig

import_app = new_app("Import the routing a serving engine recorded (vLLM, SGLang) as a trace.")

ModelOpt = Annotated[
    Path,
    typer.Option(
        "--model",
        "-m",
        help="The model the engine served: a folder with its config.json and tokenizer (weights are not read).",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Trace directory to write.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


RECORDER_FILES_HELP = "Every rank's expert_distribution_recorder_*.pt of one run, or the folder holding them."
RECORDER_HELP = """SGLang's expert-distribution recorder (per_token mode): every rank's .pt files of one run.

    Physical ids become logical ones through each file's last_physical_to_logical_map; a token two
    ranks both saw counts once; prefill passes are cut by extend_seq_lens; decode tokens are chained
    by the running batch's order and their positions, and a token that cannot be told apart becomes
    a document of its own (counted as import.unchained_tokens). Files are read with
    torch.load(weights_only=True) only. Docs: docs/engines.md.

        routelens import sglang-recorder /tmp/recorder/ --model DeepSeek-V3/ --out trace-rec/
    """
FILE_HELP = (
    "The engine's output: JSON lines, one request a line (vLLM; SGLang with meta_info.routed_experts), "
    "or SGLang's recorder dump (.pt). Formats: docs/engines.md."
)
VLLM_HELP = """vLLM's routed experts (--enable-return-routed-experts), saved as JSON lines.

    One object a line, told apart by keys: a /v1/completions or /v1/chat/completions response
    (return_token_ids: true; routed_experts base64 .npy per choice), v0.21's split
    prompt_routed_experts / routed_experts lists, or a saved offline RequestOutput (outputs[]).
    Dense layers are zero in the engine's arrays: the model's config says which layers are MoE.
    Each choice is a document; aborted requests (routed_experts null) are left out and counted.
    routelens' own earlier lines (prompt_token_ids, output_token_ids) still import. Docs: docs/engines.md.

        routelens import vllm requests.jsonl --model Qwen3-30B-A3B/ --out trace-vllm/ --domain chat
    """
SGLANG_HELP = """SGLang's routed experts (--enable-return-routed-experts) or its recorder's per-token dump.

    JSON lines carry meta_info.routed_experts (base64 int32); the recorder's physical ids are mapped
    to logical ones with its last_physical_to_logical_map, and a .pt file is read with
    torch.load(weights_only=True) only. Docs: docs/engines.md.

        routelens import sglang responses.jsonl --model DeepSeek-V3/ --out trace-sglang/

        routelens import sglang expert_distribution_recorder.pt --model DeepSeek-V3/ --out trace-rec/
    """


def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help=FILE_HELP)],
    model: ModelOpt,
    out: OutOpt,
    domain: str | None = config_option(ImportConfig, "domain", "--domain"),
    shard_tokens: int = config_option(ImportConfig, "shard_tokens", "--shard-tokens"),
    overwrite: bool = config_option(ImportConfig, "overwrite", "--overwrite"),
    strict: bool = config_option(ImportConfig, "strict", "--strict"),
    trust_remote_code: bool = config_option(ImportConfig, "trust_remote_code", "--trust-remote-code"),
    quiet: QuietOpt = False,
) -> None:
    """The one command behind `import vllm` and `import sglang`: the engine is the name it was called by."""
    _run(ctx.info_name, file, model, out, domain, shard_tokens, overwrite, strict, trust_remote_code, quiet)


def recorder_command(
    files: Annotated[list[Path], typer.Argument(help=RECORDER_FILES_HELP)],
    model: ModelOpt,
    out: OutOpt,
    domain: str | None = config_option(ImportConfig, "domain", "--domain"),
    shard_tokens: int = config_option(ImportConfig, "shard_tokens", "--shard-tokens"),
    overwrite: bool = config_option(ImportConfig, "overwrite", "--overwrite"),
    strict: bool = config_option(ImportConfig, "strict", "--strict"),
    trust_remote_code: bool = config_option(ImportConfig, "trust_remote_code", "--trust-remote-code"),
    quiet: QuietOpt = False,
) -> None:
    _run("sglang-recorder", files, model, out, domain, shard_tokens, overwrite, strict, trust_remote_code, quiet)


def _run(engine, file, model, out, domain, shard_tokens, overwrite, strict, trust_remote_code, quiet) -> None:
    from routelens.engines import import_engine

    config = cli_config(
        ImportConfig,
        domain=domain,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        strict=strict,
        trust_remote_code=trust_remote_code,
        progress=not quiet,
    )
    tr = import_engine(engine, file, model, out, config)
    console.print(
        f"[green]wrote[/] {out}: {tr.num_tokens:,} rows of {tr.manifest['totals']['documents']:,} requests, "
        f"{len(tr.layers)} MoE layers, top-{tr.top_k} of {tr.num_experts} (no weights: engines record experts only)"
    )
    for line in import_notes(tr.manifest.get("import") or {}):
        console.print(f"[yellow]{line}[/]")


def _paragraphs(text: str) -> str:
    """A help text with each paragraph on one line (rich help keeps a paragraph's line breaks)."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


import_app.command("vllm", help=_paragraphs(VLLM_HELP))(import_command)
import_app.command("sglang", help=_paragraphs(SGLANG_HELP))(import_command)
import_app.command("sglang-recorder", help=_paragraphs(RECORDER_HELP))(recorder_command)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
