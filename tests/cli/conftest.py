"""Fixtures shared by the CLI tests: a micro MoE trained by `routelens train` itself (once per
session; `routelens eval` runs on it)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.training.test_train import write_micro_corpus

TRAIN_ARGS = [
    "--top-k",
    "2",
    "--hidden",
    "32",
    "--heads",
    "2",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--steps",
    "4",
    "--checkpoint-every",
    "2",
    "--vocab-size",
    "300",
    "--val-tokens",
    "200",
    "--quiet",
]


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory):
    """(model dir, corpus specs) of `routelens train ... --num-experts 4 --num-layers 2`."""
    root = tmp_path_factory.mktemp("micro-cli")
    specs = write_micro_corpus(root / "corpus")
    out = root / "model"
    corpora = sum((["--corpus", s] for s in specs), [])
    result = CliRunner().invoke(
        app, ["train", *corpora, "--out", str(out), "--num-experts", "4", "--num-layers", "2", *TRAIN_ARGS]
    )
    assert result.exit_code == 0, result.output
    return out, specs
