"""`routelens upcycle DENSE_DIR`: a dense Llama/Mistral/Qwen2 checkpoint -> a Mixtral MoE checkpoint.

    routelens upcycle dense/ --experts 8 --top-k 2 --mode copy --out moe/
    routelens upcycle dense/ --experts 4 --top-k 1 --mode split --out moe-split/ --seed 1
    routelens train --init moe/ --corpus code=corpus/code.txt --out trained/
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routelens.cli.common import console
from routelens.training import UpcycleMode

_MODE_HELP = (
    "copy: every expert = the dense FFN (outputs equal the dense model's). split: the FFN's neurons cut into E "
    "experts of intermediate/E (all experts summed = the FFN; top-k routing is not)."
)


def upcycle_cmd(
    dense_dir: Annotated[
        Path, typer.Argument(help="Directory of a dense LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM.")
    ],
    experts: Annotated[int, typer.Option("--experts", help="Routed experts per layer (E).")],
    top_k: Annotated[int, typer.Option("--top-k", help="Experts each token is routed to (1..E).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the Mixtral checkpoint (must be empty or absent).")],
    mode: Annotated[UpcycleMode, typer.Option("--mode", help=_MODE_HELP)] = UpcycleMode.COPY,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the router initialisation and of split's neuron permutation.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")] = False,
) -> None:
    """Sparse upcycling: copy a dense checkpoint's attention, embeddings and norms into a Mixtral model
    whose experts start from the dense feed-forward blocks, with freshly initialised routers.

    The output (with the dense model's tokenizer files) loads with AutoModelForCausalLM and can be
    trained further with `routelens train --init DIR`. Qwen2 checkpoints are accepted only when their
    attention biases are zero (Mixtral attention has none).

        routelens upcycle dense/ --experts 8 --top-k 2 --mode copy --out moe/
        routelens upcycle dense/ --experts 4 --top-k 2 --mode split --out moe-split/
    """
    from routelens.training.upcycle import upcycle

    path = upcycle(dense_dir, out, experts=experts, top_k=top_k, mode=mode, seed=seed, overwrite=overwrite, progress=True)
    console.print(f"wrote a MixtralForCausalLM ({experts} experts, top-{top_k}, {mode.value}) to {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("upcycle")(upcycle_cmd)
