"""`routelens upcycle DENSE_DIR`: a dense Llama/Mistral/Qwen2 checkpoint -> a Mixtral MoE checkpoint.

routelens upcycle dense/ --num-experts 8 --top-k 2 --mode copy --out moe/
routelens upcycle dense/ --num-experts 4 --top-k 1 --mode split --out moe-split/ --seed 1
routelens train --init moe/ --corpus code=corpus/code.txt --out trained/
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console
from routelens.cli.options import cli_config, config_option
from routelens.training import UpcycleMode
from routelens.training.configs import UpcycleConfig


def upcycle_cmd(
    dense_dir: Annotated[
        Path, typer.Argument(help="Directory of a dense LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM.")
    ],
    num_experts: int = config_option(UpcycleConfig, "num_experts", "--num-experts", "--experts"),
    top_k: int = config_option(UpcycleConfig, "top_k", "--top-k"),
    out: Path = typer.Option(..., "--out", help="Directory for the Mixtral checkpoint (must be empty or absent)."),
    mode: UpcycleMode = config_option(UpcycleConfig, "mode", "--mode"),
    seed: int = config_option(UpcycleConfig, "seed", "--seed"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")] = False,
) -> None:
    """Sparse upcycling: copy a dense checkpoint's attention, embeddings and norms into a Mixtral model
    whose experts start from the dense feed-forward blocks, with freshly initialised routers.

    The output (with the dense model's tokenizer files) loads with AutoModelForCausalLM and can be
    trained further with `routelens train --init DIR`. Qwen2 checkpoints are accepted only when their
    attention biases are zero (Mixtral attention has none).

        routelens upcycle dense/ --num-experts 8 --top-k 2 --mode copy --out moe/
        routelens upcycle dense/ --num-experts 4 --top-k 2 --mode split --out moe-split/
    """
    from routelens.training.upcycle import upcycle

    config = cli_config(UpcycleConfig, num_experts=num_experts, top_k=top_k, mode=mode, seed=seed)
    path = upcycle(dense_dir, out, config, overwrite=overwrite, progress=True)  # locks --out for the run
    console.print(
        f"wrote a MixtralForCausalLM ({num_experts} experts, top-{top_k}, {config.mode.value}) to {path}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("upcycle")(upcycle_cmd)
