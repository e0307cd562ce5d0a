"""`routelens upcycle` driven through the CLI: a loadable Mixtral checkpoint, the count under
`--num-experts` and its earlier spelling `--experts`, one-line errors."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, LlamaConfig
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.conftest import save_tiny_model
from tests.training.test_upcycle import SHAPES


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("dense") / "llama", LlamaConfig(**SHAPES))


@pytest.mark.parametrize("flag", ["--num-experts", "--experts"])
def test_cli(llama_dir, tmp_path, flag):
    runner = CliRunner()
    ok = runner.invoke(
        app, ["upcycle", str(llama_dir), flag, "4", "--top-k", "1", "--mode", "split", "--out", str(tmp_path / "m")]
    )
    assert ok.exit_code == 0, ok.output
    assert "MixtralForCausalLM (4 experts, top-1, split)" in ok.output
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m").config.num_experts_per_tok == 1
    record = json.loads((tmp_path / "m" / "upcycle.json").read_text())
    assert record["num_experts"] == record["experts"] == 4 and record["mode"] == "split"
    bad = runner.invoke(
        app, ["upcycle", str(tmp_path / "nope"), flag, "4", "--top-k", "1", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "no directory" in bad.output and "Traceback" not in bad.output
