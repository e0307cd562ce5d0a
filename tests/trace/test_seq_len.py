"""The window length fits the model: no --seq-len means 512 cut to the model's positions (less
--generate), recorded in the manifest as the value used; a --seq-len given beyond the model is
refused in one line, from the CLI (exit 2) and from `routelens.trace` alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from routelens.errors import RoutelensError
from routelens.trace import TraceConfig
from routelens.trace.config import SEQ_LEN
from tests.conftest import save_tiny_model, tiny_mixtral_config
from tests.trace.corpora import DOCS, write_txt

POSITIONS = 40  # the short model's max_position_embeddings, far below the default 512


@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    return save_tiny_model(
        tmp_path_factory.mktemp("models") / "short", tiny_mixtral_config(max_position_embeddings=POSITIONS)
    )


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_txt(tmp_path / "a.txt", DOCS)


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_no_seq_len_is_the_default_fitted_to_a_short_model_from_the_cli(short_model, corpus, tmp_path):
    out = tmp_path / "gen"
    result = run("trace", short_model, "-c", f"web={corpus}", "-o", out, "-q", "--generate", 12, "--batch-size", 2)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seq_len"] == POSITIONS - 12  # room left for the decoded tokens
    assert manifest["identity"]["seq_len"] == POSITIONS - 12
    assert manifest["generation"]["generate"] == 12
    info = run("info", out, "--json", "-")
    assert info.exit_code == 0 and json.loads(info.output)["seq_len"] == POSITIONS - 12


def test_an_explicit_seq_len_beyond_the_model_is_still_refused(short_model, corpus, tmp_path):
    out = tmp_path / "t"
    refused = run("trace", short_model, "-c", f"web={corpus}", "-o", out, "-q", "--seq-len", 64)
    assert refused.exit_code == 2, refused.output
    assert "--seq-len 64 is beyond the model's max_position_embeddings 40" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output
    assert not out.exists()
    with_generate = run("trace", short_model, "-c", f"web={corpus}", "-o", out, "-q", "--seq-len", 32, "--generate", 12)
    assert with_generate.exit_code == 2 and "--generate 12 = 44 positions" in with_generate.output
    assert not out.exists()


def test_generate_longer_than_the_model_leaves_no_room_and_says_so(short_model, corpus, tmp_path):
    refused = run("trace", short_model, "-c", f"web={corpus}", "-o", tmp_path / "t", "-q", "--generate", POSITIONS)
    assert refused.exit_code == 2, refused.output
    assert f"--generate {POSITIONS} leaves no position" in refused.output
    assert f"--generate {POSITIONS - 1} or less" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output


def test_the_library_fits_and_refuses_as_the_cli_does(short_model, tiny_mixtral, corpus, tmp_path):
    spec = [f"web={corpus}"]
    fitted = routelens.trace(str(short_model), spec, tmp_path / "a", progress=False)
    assert fitted.manifest["seq_len"] == POSITIONS  # no --generate: the whole position table
    generated = routelens.trace(str(short_model), spec, tmp_path / "b", generate=5, batch_size=2, progress=False)
    assert generated.manifest["seq_len"] == POSITIONS - 5
    roomy = routelens.trace(str(tiny_mixtral), spec, tmp_path / "c", max_tokens=20, progress=False)
    assert roomy.manifest["seq_len"] == SEQ_LEN == 512  # a model with 512 positions keeps the default
    with pytest.raises(RoutelensError, match="--seq-len 41 is beyond the model's max_position_embeddings 40"):
        routelens.trace(str(short_model), spec, tmp_path / "d", seq_len=POSITIONS + 1, progress=False)
    with pytest.raises(RoutelensError, match=f"--generate {POSITIONS} leaves no position"):
        routelens.trace(str(short_model), spec, tmp_path / "e", generate=POSITIONS, progress=False)
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_a_resumed_trace_fits_to_the_same_window(short_model, corpus, tmp_path):
    """The identity holds the fitted value, so re-running without --seq-len finds the same trace,
    and so does the same value given explicitly."""
    spec = [f"web={corpus}"]
    first = routelens.trace(str(short_model), spec, tmp_path / "t", progress=False)
    again = routelens.trace(str(short_model), spec, tmp_path / "t", progress=False)
    explicit = routelens.trace(str(short_model), spec, tmp_path / "t", seq_len=POSITIONS, progress=False)
    assert first.manifest == again.manifest == explicit.manifest


def test_the_config_leaves_seq_len_to_the_model_and_help_says_so():
    assert TraceConfig().seq_len is None
    with pytest.raises(ValueError, match="not fitted"):
        TraceConfig().window()
    assert TraceConfig(seq_len=16).window() == 16
    with pytest.raises(RoutelensError, match=r"--seq-len must be at least 1 \(got 0\)"):
        TraceConfig(seq_len=0)
    page = CliRunner().invoke(app, ["trace", "--help"], env={"COLUMNS": "250"}).output
    assert "512, fitted to the model" in " ".join(page.split())
