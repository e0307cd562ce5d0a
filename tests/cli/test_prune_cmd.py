"""`routelens importance`, `routelens ablate` and `routelens prune` from the command line: tables,
`--json FILE` and `--json -`, a pruned checkpoint that `routelens eval` evaluates, and user errors
as one line with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from tests.pruning.planted import write_planted


@pytest.fixture(scope="module")
def cli_trace(cli_model, tmp_path_factory):
    model, specs = cli_model
    out = tmp_path_factory.mktemp("prune-cli") / "trace"
    routelens.trace(model, specs, out, seq_len=32, max_tokens=600, progress=False)
    return out


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert text in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_importance_prints_a_table_and_writes_json(tmp_path):
    trace = write_planted(tmp_path / "t")
    shown = CliRunner().invoke(app, ["importance", str(trace), "--json", str(tmp_path / "i.json"), "--quiet"])
    assert shown.exit_code == 0, shown.output
    assert "Most and least important experts" in shown.output and "reap" in shown.output
    saved = json.loads((tmp_path / "i.json").read_text())
    assert saved["overall"]["assignments"]["1"] == [3, 1, 1, 2]
    alone = CliRunner().invoke(app, ["importance", str(trace), "--json", "-", "--quiet"])
    assert alone.exit_code == 0 and json.loads(alone.stdout) == saved


def test_prune_writes_a_checkpoint_eval_reads(cli_model, cli_trace, tmp_path):
    model, specs = cli_model
    out = tmp_path / "pruned"
    result = CliRunner().invoke(
        app,
        [
            "prune",
            str(model),
            "--trace",
            str(cli_trace),
            "--keep",
            "2",
            "--criterion",
            "weighted",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 of 4 experts" in result.output and (out / "prune.json").is_file() and (out / "training.json").is_file()
    assert "Writing model shards" not in result.output + (result.stderr or "")  # quiet: transformers' bars too
    evaluated = CliRunner().invoke(
        app, ["eval", str(out), "--corpus", specs[0], "--max-tokens", "200", "--json", "-", "--quiet"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["num_experts"] == 2
    again = CliRunner().invoke(
        app, ["prune", str(model), "--trace", str(cli_trace), "--keep", "2", "--out", str(out), "--quiet"]
    )
    _one_line_error(again, "--overwrite")
    record = CliRunner().invoke(
        app,
        [
            "prune",
            str(model),
            "--trace",
            str(cli_trace),
            "--drop-fraction",
            "0.25",
            "--out",
            str(out),
            "--overwrite",
            "--json",
            "-",
            "--quiet",
        ],
    )
    assert record.exit_code == 0, record.output
    assert json.loads(record.stdout)["num_experts"] == 3


def test_prune_refuses_bad_input_in_one_line(cli_model, cli_trace, tmp_path):
    model, _ = cli_model
    base = ["prune", str(model), "--trace", str(cli_trace), "--out", str(tmp_path / "o"), "--quiet"]
    _one_line_error(CliRunner().invoke(app, [*base, "--keep", "5"]), "outside 1..4")
    _one_line_error(CliRunner().invoke(app, [*base, "--keep", "0"]), "at least 1")
    _one_line_error(
        CliRunner().invoke(app, [*base, "--keep", "2", "--criterion", "loudest"]), "criterion 'loudest' is unknown"
    )
    _one_line_error(CliRunner().invoke(app, [*base]), "exactly one of --keep N and --drop-fraction F")
    other = write_planted(tmp_path / "planted")
    _one_line_error(
        CliRunner().invoke(
            app, ["prune", str(model), "--trace", str(other), "--keep", "2", "--out", str(tmp_path / "o"), "--quiet"]
        ),
        "another model",
    )
    assert not (tmp_path / "o").exists()


def test_ablate_prints_the_change_per_corpus(cli_model, tmp_path):
    model, specs = cli_model
    corpora = sum((["--corpus", s] for s in specs), [])
    result = CliRunner().invoke(
        app,
        [
            "ablate",
            str(model),
            *corpora,
            "--expert",
            "0:1",
            "-e",
            "1:2,3",
            "--json",
            str(tmp_path / "a.json"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console may wrap a long model path
    assert "without experts (layer 0: 1; layer 1: 2, 3)" in text and "held-out" in text
    saved = json.loads((tmp_path / "a.json").read_text())
    assert set(saved["delta"]["domains"]) == {"code", "prose"}
    _one_line_error(
        CliRunner().invoke(app, ["ablate", str(model), *corpora, "--expert", "0:7", "--quiet"]), "experts 0..3"
    )
    _one_line_error(CliRunner().invoke(app, ["ablate", str(model), *corpora, "--quiet"]), "no expert to remove")
