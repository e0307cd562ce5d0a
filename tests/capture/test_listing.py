"""`routelens families` and the README block generated from it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.capture.catalog import moe_families
from routelens.capture.readme import END, START, block_of, updated
from routelens.capture.unsupported import UNSUPPORTED
from routelens.cli.main import app
from routelens.errors import RoutelensError


def test_families_json_lists_every_moe_family_with_its_status():
    result = CliRunner().invoke(app, ["families", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["model_type"] for r in rows] == [f.model_type for f in moe_families()]
    by_type = {r["model_type"]: r for r in rows}
    assert by_type["mixtral"] == {"model_type": "mixtral", "router": "MixtralTopKRouter",
                                  "rule": "fp32 softmax over E -> top-k -> renormalise over the k", "status": "exact"}  # fmt: skip
    for model_type, reason in UNSUPPORTED.items():
        assert by_type[model_type]["status"] == f"unsupported: {reason}"
    assert all(r["rule"] and "\n" not in r["rule"] and "{" not in r["rule"] for r in rows)
    assert "zero-computation" in by_type["longcat_flash"]["rule"]
    assert "token id" in by_type["deepseek_v4"]["rule"]


def test_families_table_counts_the_exact_ones():
    result = CliRunner().invoke(app, ["families"])
    assert result.exit_code == 0, result.output
    exact = len(moe_families()) - len(UNSUPPORTED)
    assert f"{exact} of {len(moe_families())} MoE families recorded exactly" in result.output


def test_readme_block_is_regenerated_between_the_markers():
    stale = f"intro\n{START}\nold list\n{END}\noutro\n"
    new = updated(stale)
    assert new.startswith("intro\n") and new.endswith("outro\n")
    assert "old list" not in new and "| mixtral | `MixtralTopKRouter` |" in block_of(new)
    assert updated(new) == new
    with pytest.raises(RoutelensError, match="families:start"):
        block_of("no markers here")
