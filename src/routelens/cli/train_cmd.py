"""`routelens train`: train a Mixtral-architecture MoE (and its BPE tokenizer) on corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import console


def train_command(
    corpus: Annotated[list[str], typer.Option("--corpus", "-c", help="NAME=PATH, repeatable (see `routelens trace --help` for PATH forms).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write; re-running the same command resumes it.")],
    experts: Annotated[int, typer.Option(help="Experts per MoE layer (num_local_experts).")] = 8,
    top_k: Annotated[int, typer.Option(help="Experts per token (num_experts_per_tok).")] = 2,
    layers: Annotated[int, typer.Option(help="Decoder layers, each with a sparse MoE block.")] = 4,
    hidden: Annotated[int, typer.Option(help="Hidden size.")] = 128,
    intermediate: Annotated[int | None, typer.Option(help="Expert FFN width (default 2 x hidden).")] = None,
    heads: Annotated[int, typer.Option(help="Attention heads (as many key/value heads).")] = 4,
    seq_len: Annotated[int, typer.Option(help="Tokens per training window.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = 32,
    steps: Annotated[int | None, typer.Option(help="Training steps (the LR schedule spans them); default 500 unless --minutes.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Wall-clock budget in minutes; stops early (not deterministic).")] = None,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warm-up, then cosine to lr/10).")] = 3e-3,
    aux_loss_coef: Annotated[float, typer.Option(help="Load-balancing loss weight.")] = 0.01,
    z_loss_coef: Annotated[float, typer.Option(help="Router z-loss weight.")] = 1e-3,
    balance: Annotated[str, typer.Option(help="Balance loss: per-layer (summed over layers) or pooled (transformers').")] = "per-layer",
    capacity_factor: Annotated[float | None, typer.Option(help="Train-time expert capacity factor (default: unlimited).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints kept in OUT/checkpoints/.")] = 100,
    keep_checkpoints: Annotated[int, typer.Option(help="Keep only the last N checkpoints (0: all).")] = 0,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2048,
    val_tokens: Annotated[int, typer.Option(help="Held-out tokens per corpus for the validation loss.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, data split and order.")] = 0,
    init: Annotated[Path | None, typer.Option(help="Start from this MixtralForCausalLM directory (e.g. from `routelens upcycle`).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a MoE language model from scratch: a byte-level BPE tokenizer and a MixtralForCausalLM,
    with held-out loss per corpus, periodic checkpoints and resume after a kill.

    Examples:

        routelens corpus builtin --out corpus/
        routelens train -c code=corpus/code.txt -c prose=corpus/prose.txt -c math=corpus/math.txt --out my-moe/ --steps 400

        routelens train -c web=c4.txt --out moe-top1/ --top-k 1 --capacity-factor 1.25 --minutes 10

        routelens train -c web=c4.txt --out upcycled-ft/ --init upcycled/ --steps 200
    """
    from routelens.training.train import TrainConfig, train

    config = TrainConfig(
        experts=experts, top_k=top_k, layers=layers, hidden=hidden, intermediate=intermediate, heads=heads,
        seq_len=seq_len, batch_size=batch_size, steps=steps if steps is not None or minutes is not None else 500,
        minutes=minutes, lr=lr, aux_loss_coef=aux_loss_coef, z_loss_coef=z_loss_coef, balance=_balance(balance),
        capacity_factor=capacity_factor, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
        seed=seed, vocab_size=vocab_size, val_tokens=val_tokens, init=str(init) if init else None,
    )  # fmt: skip
    train(corpus, out, config, progress=not quiet)
    print_training_summary(out)


def _balance(value: str):
    from routelens.errors import RoutelensError
    from routelens.training.train import BalanceLoss

    try:
        return BalanceLoss(value)
    except ValueError:
        raise RoutelensError(f"--balance {value!r} is unknown; use {' or '.join(b.value for b in BalanceLoss)}.") from None


def print_training_summary(model_dir: Path) -> None:
    import json

    meta = json.loads((Path(model_dir) / "training.json").read_text())
    table = Table(title=f"held-out loss (nats/token) of {model_dir}", title_justify="left")
    for col in ("corpus", "tokens", "model", "unigram", "unigram of corpus"):
        table.add_column(col, justify="left" if col == "corpus" else "right")
    for name, v in meta["val"].items():
        table.add_row(name, f"{v['tokens']:,}", f"{v['loss']:.3f}", f"{v['unigram_loss']:.3f}", f"{v['domain_unigram_loss']:.3f}")
    console.print(table)
    console.print(
        f"[green]trained[/] {meta['model']['parameters']:,} parameters, {meta['steps']} steps, {meta['tokens']:,} tokens "
        f"in {meta['train_seconds']:.0f} s ({meta['tokens_per_second']:,.0f} tokens/s), final loss {meta['final_loss']:.3f} -> {model_dir}"
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
