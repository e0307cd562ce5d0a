"""`routelens corpus builtin` driven through the CLI: the files it writes and its one-line errors."""

from __future__ import annotations

from typer.testing import CliRunner

from routelens.cli.main import app


def test_cli_writes_the_corpus_and_reports_errors_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["corpus", "builtin", "--out", str(tmp_path / "c"), "--size-kb", "5", "--domain", "math", "--domain", "data"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["data.txt", "math.txt"]
    assert f"--corpus math={tmp_path / 'c' / 'math.txt'}" in result.output.replace("\n", "")
    assert (tmp_path / "c" / "math.txt").read_text().startswith("Question: ")
    bad = runner.invoke(app, ["corpus", "builtin", "--out", str(tmp_path / "d"), "--size-kb", "0"])
    assert bad.exit_code == 2 and "--size-kb 0 is not positive" in bad.output
