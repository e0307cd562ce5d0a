"""`routelens train` driven through the CLI: a loadable model with its training.json, the counts
under `--num-experts`/`--num-layers` and their earlier spellings `--experts`/`--layers`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from routelens.cli.main import app
from tests.cli.conftest import TRAIN_ARGS


def test_train_cli_writes_a_loadable_model(cli_model):
    from transformers import AutoConfig

    out, _ = cli_model
    meta = json.loads((out / "training.json").read_text())
    assert (
        meta["steps"] == 4 and meta["config"]["experts"] == 4 and meta["checkpoints"] == ["step-000002", "step-000004"]
    )
    assert meta["config"]["num_experts"] == 4 and meta["config"]["num_layers"] == 2
    config = AutoConfig.from_pretrained(out)
    assert config.num_local_experts == 4 and config.num_hidden_layers == 2


def test_earlier_flag_spellings_are_the_same_run(cli_model):
    """`--experts 4 --layers 2` names the run `--num-experts 4 --num-layers 2` made: the finished
    model is recognised (same settings), not retrained or refused."""
    out, specs = cli_model
    stamp = (out / "training.json").stat().st_mtime_ns
    corpora = sum((["--corpus", s] for s in specs), [])
    same = CliRunner().invoke(
        app, ["train", *corpora, "--out", str(out), "--experts", "4", "--layers", "2", *TRAIN_ARGS]
    )
    assert same.exit_code == 0, same.output
    assert (out / "training.json").stat().st_mtime_ns == stamp
    other = CliRunner().invoke(
        app, ["train", *corpora, "--out", str(out), "--experts", "2", "--layers", "2", *TRAIN_ARGS]
    )
    assert other.exit_code == 2 and "num_experts=4" in other.output
