"""`routelens train`: train a MoE (Mixtral-, OLMoE-, Qwen3-MoE- or DeepSeek-V3-shaped) and its BPE tokenizer on corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import console
from routelens.cli.options import cli_config, config_option, field_help
from routelens.models.architectures import Architecture
from routelens.training.configs import BalanceLoss, TrainConfig


def option(name: str, *flags: str):
    return config_option(TrainConfig, name, *flags)


def train_command(
    corpus: Annotated[
        list[str],
        typer.Option("--corpus", "-c", help="NAME=PATH, repeatable (see `routelens trace --help` for PATH forms)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Model directory to write; re-running the same command resumes it.")
    ],
    architecture: Architecture = option("architecture", "--architecture"),
    num_experts: int = option("num_experts", "--num-experts", "--experts"),
    top_k: int = option("top_k", "--top-k"),
    num_layers: int = option("num_layers", "--num-layers", "--layers"),
    hidden: int = option("hidden", "--hidden"),
    intermediate: int | None = option("intermediate", "--intermediate"),
    heads: int = option("heads", "--heads"),
    seq_len: int = option("seq_len", "--seq-len"),
    batch_size: int = option("batch_size", "--batch-size"),
    # None, not the config's 500: with --minutes alone the schedule spans the wall-clock budget
    steps: int | None = typer.Option(None, "--steps", help=field_help(TrainConfig, "steps"), show_default=False),
    minutes: float | None = option("minutes", "--minutes"),
    lr: float = option("lr", "--lr"),
    aux_loss_coef: float = option("aux_loss_coef", "--aux-loss-coef"),
    z_loss_coef: float = option("z_loss_coef", "--z-loss-coef"),
    balance: BalanceLoss = option("balance", "--balance"),
    capacity_factor: float | None = option("capacity_factor", "--capacity-factor"),
    bias_update_rate: float | None = option("bias_update_rate", "--bias-update-rate"),
    checkpoint_every: int = option("checkpoint_every", "--checkpoint-every"),
    keep_checkpoints: int = option("keep_checkpoints", "--keep-checkpoints"),
    vocab_size: int = option("vocab_size", "--vocab-size"),
    val_tokens: int = option("val_tokens", "--val-tokens"),
    seed: int = option("seed", "--seed"),
    init: Path | None = option("init", "--init"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a MoE language model from scratch: a byte-level BPE tokenizer and a Mixtral-, OLMoE-,
    Qwen3-MoE- or DeepSeek-V3-shaped model (--architecture), with held-out loss per corpus, periodic
    checkpoints and resume after a kill.

    Examples:

        routelens corpus builtin --out corpus/
        routelens train -c code=corpus/code.txt -c prose=corpus/prose.txt -c math=corpus/math.txt --out my-moe/ --steps 400

        routelens train -c web=c4.txt --out moe-top1/ --top-k 1 --capacity-factor 1.25 --minutes 10

        routelens train -c web=c4.txt --out upcycled-ft/ --init upcycled/ --steps 200

        routelens train -c code=corpus/code.txt -c prose=corpus/prose.txt --architecture deepseek_v3 --out ds-moe/ --steps 400
    """
    from routelens.training.train import train

    config = cli_config(
        TrainConfig,
        architecture=architecture,
        bias_update_rate=bias_update_rate,
        num_experts=num_experts,
        top_k=top_k,
        num_layers=num_layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        seq_len=seq_len,
        batch_size=batch_size,
        minutes=minutes,
        lr=lr,
        aux_loss_coef=aux_loss_coef,
        z_loss_coef=z_loss_coef,
        balance=balance,
        capacity_factor=capacity_factor,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        seed=seed,
        vocab_size=vocab_size,
        val_tokens=val_tokens,
        init=str(init) if init else None,
        **({} if steps is None and minutes is None else {"steps": steps}),  # --minutes alone: no step cap
    )
    train(corpus, out, config, progress=not quiet)  # locks --out: two runs would interleave their checkpoints
    print_training_summary(out)


def print_training_summary(model_dir: Path) -> None:
    import json

    meta = json.loads((Path(model_dir) / "training.json").read_text())
    table = Table(title=f"held-out loss (nats/token) of {model_dir}", title_justify="left")
    for col in ("corpus", "tokens", "model", "unigram", "unigram of corpus"):
        table.add_column(col, justify="left" if col == "corpus" else "right")
    for name, v in meta["val"].items():
        table.add_row(
            name, f"{v['tokens']:,}", f"{v['loss']:.3f}", f"{v['unigram_loss']:.3f}", f"{v['domain_unigram_loss']:.3f}"
        )
    console.print(table)
    console.print(
        f"[green]trained[/] {meta['model']['parameters']:,} parameters, {meta['steps']} steps, {meta['tokens']:,} tokens "
        f"in {meta['train_seconds']:.0f} s ({meta['tokens_per_second']:,.0f} tokens/s), final loss {meta['final_loss']:.3f} -> {model_dir}"
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
