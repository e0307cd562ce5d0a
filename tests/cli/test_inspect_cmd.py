"""`routelens inspect` driven through the CLI: the JSON (`--json FILE`, `--json -` and the bare
`--json` of earlier versions) and the tables, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.training.test_params import MIXTRAL_8X7B


@pytest.fixture(scope="module")
def mixtral_dir(tmp_path_factory):
    from transformers import MixtralConfig

    path = tmp_path_factory.mktemp("cfg") / "mixtral-8x7b"
    MixtralConfig(**MIXTRAL_8X7B).save_pretrained(path)
    return path


def test_cli_json_and_tables(mixtral_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(mixtral_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total_params"] == 46_702_792_704 and data["active_params"] == 12_879_925_248
    assert data["memory_bytes"]["fp32"] == 4 * data["total_params"]
    assert data["components"]["experts_routed"]["active"] * 4 == data["components"]["experts_routed"]["total"]
    text = runner.invoke(app, ["inspect", str(mixtral_dir / "config.json")])
    assert text.exit_code == 0 and "total 46.70B, active 12.88B per token" in text.output
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no model at" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["inspect", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "has no config.json" in empty.output


@pytest.mark.parametrize(
    "argv",
    [["--json", "-"], ["--json"], ["--json", "--top-k", "1"], ["--top-k", "1", "--json"]],
    ids=["dash", "bare", "bare-before-option", "bare-last"],
)
def test_json_to_stdout_bare_or_dash(mixtral_dir, argv):
    result = CliRunner().invoke(app, ["inspect", str(mixtral_dir), *argv])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total_params"] == 46_702_792_704
    assert data["top_k"] == (1 if "--top-k" in argv else 2)


def test_json_file(mixtral_dir, tmp_path):
    out = tmp_path / "params.json"
    result = CliRunner().invoke(app, ["inspect", str(mixtral_dir), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == json.loads(
        CliRunner().invoke(app, ["inspect", str(mixtral_dir), "--json"]).stdout
    )
    assert "wrote" in result.output and "{" not in result.output
