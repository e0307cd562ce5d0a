"""`routelens eval` driven through the CLI on a model `routelens train` wrote: tables, capacity
drops, `--json FILE` and `--json -`, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app


def test_eval_cli_capacity_drops_and_json(cli_model, tmp_path):
    out, specs = cli_model
    args = ["eval", str(out), *sum((["--corpus", s] for s in specs), []), "--max-tokens", "400", "--quiet"]
    free = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "free.json")])
    tight = CliRunner().invoke(
        app, [*args, "--capacity-factor", "0.25", "--top-k", "1", "--json", str(tmp_path / "cf.json")]
    )
    assert free.exit_code == 0 and tight.exit_code == 0, free.output + tight.output
    assert "perplexity" in free.output and "dropped by capacity" in tight.output
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("free.json", "cf.json"))
    assert set(a["domains"]) == {"code", "prose"} and a["top_k"] == 2 and b["top_k"] == 1
    # CF 0.25 of top-1 leaves room for a quarter of the assignments: at least 3/4 dropped
    assert all(d >= 0.75 - 1e-9 for d in b["dropped_share"]) and all(d == 0 for d in a["dropped_share"])
    assert b["fully_dropped_share"] == pytest.approx(b["dropped_share"])  # top-1: a dropped assignment is the token
    assert b["loss"] != a["loss"]
    stdout = CliRunner().invoke(app, [*args, "--json", "-"])
    assert stdout.exit_code == 0 and json.loads(stdout.stdout) == a


def test_eval_errors_are_one_line(cli_model):
    out, specs = cli_model
    result = CliRunner().invoke(app, ["eval", str(out), "--corpus", specs[0], "--capacity-factor", "0", "--quiet"])
    assert result.exit_code == 2 and "capacity factor 0" in result.output and "Traceback" not in result.output
