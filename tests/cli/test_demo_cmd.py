"""`routelens demo` driven through the CLI: a second run reuses the model the first one trained,
and a file as --out is a one-line error."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app


@pytest.mark.slow
def test_second_run_reuses_the_trained_model(demo_run, tmp_path, monkeypatch):
    first, _ = demo_run  # tests/conftest.py: a tiny run_demo trained with 3 steps
    monkeypatch.setenv("ROUTELENS_FIGURE_FORMATS", "none")  # figure copies: tests/report/test_build.py
    out = tmp_path / "demo"
    shutil.copytree(first / "model", out / "model")  # the CLI run writes its own corpus, trace and report
    stamp = (out / "model" / "training.json").stat().st_mtime_ns
    tiny = ["--steps", "3", "--trace-tokens", "1000", "--pos-tokens", "800", "--saturation-tokens", "300"]
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *tiny, "--seq-len", "64", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output and (out / "report.html").is_file()
    assert (out / "model" / "training.json").stat().st_mtime_ns == stamp


def test_out_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "file"), "--quiet"])
    assert result.exit_code == 2 and "is a file" in result.output
