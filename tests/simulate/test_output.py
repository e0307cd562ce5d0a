"""The simulators write their own `json_path`: the path is checked before any replay (a missing
folder is refused at once, not after the simulation), the file is the result in the formatting
`routelens simulate --json` always wrote, and the CLI's file is the library's, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from routelens.atomic import json_text
from routelens.cli.main import app
from routelens.errors import RoutelensError
from routelens.simulate import cache_with_control, simulate_all, simulate_balance, simulate_cache, simulate_distinct

SIMULATORS = {
    "cache": lambda t, **kw: simulate_cache(t, capacities=(2,), progress=False, **kw),
    "cache_with_control": lambda t, **kw: cache_with_control(t, capacities=(2,), progress=False, **kw),
    "balance": lambda t, **kw: simulate_balance(t, devices=2, batch_tokens=16, **kw),
    "distinct": lambda t, **kw: simulate_distinct(t, batch=4, **kw),
    "all": lambda t, **kw: simulate_all(t, capacities=(2,), devices=2, batch_tokens=16, progress=False, **kw),
}


@pytest.fixture
def trace(planted):
    rng = np.random.default_rng(0)
    experts = np.stack([rng.permutation(8)[:2] for _ in range(64 * 2)]).reshape(64, 2, 2)  # k distinct
    return planted(experts, [30, 34], 8)


@pytest.mark.parametrize("name", list(SIMULATORS))
def test_json_path_is_written_in_the_clis_format(trace, tmp_path, name):
    out = tmp_path / f"{name}.json"
    result = SIMULATORS[name](trace, json_path=out)
    assert out.read_text() == json_text(result, indent=2, allow_nan=True) + "\n"
    assert json.loads(out.read_text()) == json.loads(json_text(result, allow_nan=True))


@pytest.mark.parametrize("name", list(SIMULATORS))
def test_a_missing_folder_is_refused_before_the_simulation_runs(trace, tmp_path, monkeypatch, name):
    import routelens.simulate.balance as balance
    import routelens.simulate.cache as cache
    import routelens.simulate.distinct as distinct
    import routelens.simulate.suite as suite

    def never(*args, **kwargs):
        raise AssertionError("the trace was read before the output path was checked")

    for module in (cache, balance, distinct, suite):
        monkeypatch.setattr(module, "open_trace", never)
    missing = tmp_path / "missing" / "x.json"
    with pytest.raises(RoutelensError) as info:
        SIMULATORS[name](str(trace), json_path=missing)
    assert (
        str(info.value)
        == f"--json {missing}: folder {missing.parent} does not exist; create it or choose another path."
    )
    with pytest.raises(RoutelensError, match=r"is a directory; give a file name such as"):
        SIMULATORS[name](str(trace), json_path=tmp_path)
    assert not missing.parent.exists()


def test_the_clis_file_is_the_librarys(trace, tmp_path):
    out = tmp_path / "b.json"
    args = ["simulate", "balance", str(trace), "-D", "2", "-B", "16", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    simulate_balance(trace, devices=2, batch_tokens=16, json_path=tmp_path / "lib.json")
    assert out.read_bytes() == (tmp_path / "lib.json").read_bytes()
    stdout = CliRunner().invoke(app, [*args[:-1], "-"])
    assert stdout.exit_code == 0 and stdout.stdout == out.read_text()  # `--json -`: the file's text
