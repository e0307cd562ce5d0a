"""`routelens import vllm|sglang FILE --model MODEL_DIR --out TRACE`: routing recorded by a serving
engine as a routelens trace (a thin layer over `routelens.engines.import_engine`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console, new_app
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


FILE_HELP = (
    "The engine's output: JSON lines, one request a line (vLLM; SGLang with meta_info.routed_experts), "
    "or SGLang's recorder dump (.pt). Formats: docs/engines.md."
)
VLLM_HELP = """vLLM's routed experts (enable_return_routed_experts), saved as JSON lines.

    One request a line: prompt_token_ids, output_token_ids, prompt_routed_experts and routed_experts
    (tokens, layers, k); domain and request_id optional. Layers are the MoE layers, or every decoder
    layer with -1 in the dense ones (read from the model's config). Prompt rows get phase prefill,
    generated ones decode. Docs: docs/engines.md.

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
    trust_remote_code: bool = config_option(ImportConfig, "trust_remote_code", "--trust-remote-code"),
    quiet: QuietOpt = False,
) -> None:
    """The one command behind `import vllm` and `import sglang`: the engine is the name it was called by."""
    from routelens.engines import import_engine

    config = cli_config(
        ImportConfig,
        domain=domain,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        trust_remote_code=trust_remote_code,
        progress=not quiet,
    )
    tr = import_engine(ctx.info_name, file, model, out, config)
    console.print(
        f"[green]wrote[/] {out}: {tr.num_tokens:,} rows of {tr.manifest['totals']['documents']:,} requests, "
        f"{len(tr.layers)} MoE layers, top-{tr.top_k} of {tr.num_experts} (no weights: engines record experts only)"
    )


def _paragraphs(text: str) -> str:
    """A help text with each paragraph on one line (rich help keeps a paragraph's line breaks)."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


import_app.command("vllm", help=_paragraphs(VLLM_HELP))(import_command)
import_app.command("sglang", help=_paragraphs(SGLANG_HELP))(import_command)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
