"""`routelens simulate cache|balance|all` driven through the CLI: exit codes, tables, JSON files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from routelens.synthetic import SyntheticSpec, write_synthetic_trace

runner = CliRunner()


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    spec = SyntheticSpec(num_docs=10, doc_len=100, layers=(0, 2), num_experts=8, top_k=2, repeat=0.5, seed=1)
    return write_synthetic_trace(tmp_path_factory.mktemp("cli") / "t", spec)


def test_cache_table_and_json(trace, tmp_path):
    out = tmp_path / "cache.json"
    result = runner.invoke(
        app,
        [
            "simulate",
            "cache",
            str(trace),
            "-p",
            "lru",
            "-p",
            "belady",
            "-C",
            "2",
            "-C",
            "8",
            "--expert-bytes",
            "1000000",
            "--json",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Expert-cache hit rate" in result.output and "belady-lru" in result.output and "MB" in result.output
    data = json.loads(out.read_text())
    assert set(data["cache"]) == {"lru", "belady"} and set(data["cache"]["lru"]["2"]) == {"2", "8"}
    assert set(data["cache_shuffled"]["lru"]) == {"0", "2"}
    assert data["cache"]["lru"]["0"]["8"] == pytest.approx(1 - 8 / 4000)  # 2,000 tokens x k=2; only the 8 cold misses
    # The printed table shows the mean over layers at capacity 8.
    assert f"{data['cache']['lru']['0']['8']:.3f}" in result.output
    # Loads per token for every policy, in their own table.
    assert "Experts loaded per token" in result.output
    mean_loads = (data["cache_loads"]["belady"]["0"]["2"] + data["cache_loads"]["belady"]["2"]["2"]) / 2
    assert f"{mean_loads:.3f}" in result.output.split("Experts loaded per token")[1]


def test_balance_table_and_json(trace, tmp_path):
    out = tmp_path / "balance.json"
    result = runner.invoke(
        app,
        [
            "simulate",
            "balance",
            str(trace),
            "--devices",
            "4",
            "--batch-tokens",
            "100",
            "--cf",
            "1.0",
            "--cf",
            "1.25",
            "--placement",
            "round_robin",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert list(data["balance"]) == ["round_robin"] and list(data["balance"]["round_robin"]) == ["1.0", "1.25"]
    assert set(data["balance"]["round_robin"]["1.0"]) == {"dropped", "imbalance_max_mean"}
    assert data["balance_meta"]["batches"] == 20
    assert f"{data['balance']['round_robin']['1.0']['dropped']:.2%}" in result.output


def test_all_writes_both_keys(trace, tmp_path):
    out = tmp_path / "sim.json"
    result = runner.invoke(app, ["simulate", "all", str(trace), "--json", str(out), "-C", "3", "-B", "50", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"cache", "cache_detail", "cache_shuffled", "cache_gap", "balance", "balance_shuffled"} <= set(data)
    assert set(data["cache"]) == {"lru", "lfu", "belady", "prefetch"}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["cache", "{trace}", "--capacity", "9", "-q"], "capacity 9"),
        (["balance", "{trace}", "--devices", "0"], "--devices 0"),
        (["cache", "{trace}", "--json", "{tmp}/missing/x.json"], "does not exist"),
        (["cache", "{tmp}/nowhere"], "no routelens trace"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(trace, tmp_path, args, fragment):
    args = [a.format(trace=trace, tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["simulate", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "missing").exists()


def test_json_dash_writes_the_result_alone_to_stdout(trace, tmp_path):
    base = ["simulate", "balance", str(trace), "-D", "2", "-B", "100", "--cf", "1.0"]
    assert runner.invoke(app, [*base, "--json", str(tmp_path / "b.json")]).exit_code == 0
    result = runner.invoke(app, [*base, "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((tmp_path / "b.json").read_text())
    both = runner.invoke(app, ["simulate", "all", str(trace), "-p", "lru", "-C", "2", "-D", "2", "--json", "-", "-q"])
    assert both.exit_code == 0 and {"cache", "balance"} <= set(json.loads(both.stdout))


def test_cache_what_ifs_pin_bandwidth_and_budget(trace, tmp_path):
    out = tmp_path / "c.json"
    result = runner.invoke(
        app,
        [
            "simulate",
            "cache",
            str(trace),
            "-p",
            "lru",
            "--pin",
            "2",
            "--expert-bytes",
            "1000000",
            "--bandwidth",
            "10",
            "--budget-bytes",
            "6000000",
            "--json",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["cache"]) == {"lru", "pin"} and len(data["cache_meta"]["pinned"]["0"]) == 2
    row = data["cache_budget"]["lru"]["6000000"]
    assert row["slots"] == 6 and row["best"]["hit_rate"] >= row["uniform"]["hit_rate"]
    assert sum(row["uniform"]["split"].values()) == 6
    assert "Expert memory split" in result.output and f"{row['best']['hit_rate']:.3f}" in result.output
    ms = data["cache_load_time"]["pin"]["4"] * 1e3
    assert "Load ms/token at 10 GB/s" in result.output and f"{ms:.3f}" in result.output


def test_balance_decode_batch_and_distinct(trace, tmp_path):
    result = runner.invoke(
        app,
        ["simulate", "balance", str(trace), "-D", "2", "-B", "16", "--cf", "1.0", "--decode-batch", "4", "--json", "-"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (
        data["balance_meta"]["decode_steps"] == 5 * 100
    )  # 20 documents of 100 tokens (2 domains) on 4 slots: 5 rounds
    assert set(data["balance_decode"]) == set(data["balance"])
    out = tmp_path / "d.json"
    result = runner.invoke(app, ["simulate", "distinct", str(trace), "--batch", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["distinct"]) == {"0", "2"} and 2 <= data["distinct"]["0"]["mean"] <= 8
    assert (
        "Distinct experts per batch of 4" in result.output and f"{data['distinct']['0']['mean']:.2f}" in result.output
    )
