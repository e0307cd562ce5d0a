"""`routelens families` and the README block generated from it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.capture.listing import verified_versions
from routelens.capture.readme import END, START, block_of, updated
from routelens.cli.main import app
from routelens.errors import RoutelensError
from routelens.models.catalog import moe_families
from routelens.models.unsupported import UNSUPPORTED


def test_families_json_lists_every_moe_family_with_its_status():
    result = CliRunner().invoke(app, ["families", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["model_type"] for r in rows] == [f.model_type for f in moe_families()]
    by_type = {r["model_type"]: r for r in rows}
    mixtral = dict(by_type["mixtral"])
    verified_on = mixtral.pop("verified_on")
    assert mixtral.pop("unpadded") is None
    assert mixtral == {
        "model_type": "mixtral",
        "router": "MixtralTopKRouter",
        "rule": "fp32 softmax over E -> top-k -> renormalise over the k",
        "status": "exact",
        "replay": "exact",
    }
    assert verified_on == verified_versions()["mixtral"][-1]
    assert all(by_type[t]["verified_on"] is None for t in UNSUPPORTED)
    assert by_type["deepseek_v4"]["unpadded"]
    for model_type, reason in UNSUPPORTED.items():
        assert by_type[model_type]["status"] == f"unsupported: {reason}" and by_type[model_type]["replay"] == "-"
    from routelens.models.replay import REFUSED

    assert by_type["phimoe"]["replay"] == f"refused: {REFUSED['phimoe']}"
    assert sum(r["replay"] == "exact" for r in rows) == len(rows) - len(UNSUPPORTED) - len(REFUSED)
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


def test_families_verify_prints_each_family_and_the_count(monkeypatch):
    import transformers

    result = CliRunner().invoke(app, ["families", "--verify", "mixtral", "doge"])
    assert result.exit_code == 0, result.output
    assert "mixtral: verified" in result.output and "doge: skipped" in result.output
    assert (
        result.output.strip().splitlines()[-1]
        == f"1 of 2 MoE families verified on transformers {transformers.__version__}"
    )
    rows = json.loads(CliRunner().invoke(app, ["families", "--verify", "mixtral", "--json", "-"]).stdout)
    assert rows[0]["verify"] == "verified" and rows[0]["transformers"] == transformers.__version__
    assert rows[0]["status"] == "exact" and "verified_on" in rows[0]


def test_families_verify_exits_1_when_a_capture_is_broken(monkeypatch):
    from routelens.models import hooks as recorder

    real = recorder.experts_inputs
    monkeypatch.setattr(recorder, "experts_inputs", lambda a, k: ((real(a, k)[0] + 1) % 8, real(a, k)[1]))
    result = CliRunner().invoke(app, ["families", "--verify", "mixtral"])
    assert result.exit_code == 1 and "mixtral: failed: experts differ" in result.output
    assert "0 of 1 MoE families verified" in result.output


def test_families_verify_refuses_an_unknown_model_type():
    result = CliRunner().invoke(app, ["families", "--verify", "no_such_family"])
    assert result.exit_code == 2 and "no_such_family is not a MoE family" in result.output


def test_the_verified_versions_file_lists_the_installed_release_for_every_family_that_verifies():
    """When the file names the installed transformers at all, it was written on it: then every
    recorded family lists it (the conformance suite checks that each one verifies here)."""
    import transformers

    table = verified_versions()
    if not any(transformers.__version__ in v for v in table.values()):
        pytest.skip(f"verified_on.json was not written on transformers {transformers.__version__}")
    recorded = {f.model_type for f in moe_families()} - set(UNSUPPORTED)
    assert {t for t, v in table.items() if transformers.__version__ in v} == recorded
