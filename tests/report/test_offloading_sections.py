"""The offloading what-ifs in the report: the memory-budget table of `simulate cache --budget-bytes`,
the prefill-vs-decode table of `simulate balance --decode-batch`, and the section of `simulate
distinct` (`report --distinct`), each built from the real simulators' JSON on a synthetic trace and
checked against the numbers read back from that JSON; absent inputs leave them out, and a
`--distinct` file of another trace is refused in one line with exit code 2."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from routelens.report.figures.distinct import distinct_figure
from routelens.report.html import num, pct
from routelens.report.sections.cache import _seconds
from routelens.simulate import simulate_balance, simulate_cache, simulate_distinct
from routelens.simulate.distinct import uniform_distinct
from tests.report.conftest import make_trace

BUDGETS = (6000, 12000)  # bytes, at 1000 bytes per expert: 6 and 12 slots over 3 layers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trace, its analysis, and the three simulators' JSON (with and without the what-ifs)."""
    from routelens.analysis import analyze

    root = tmp_path_factory.mktemp("offload")
    trace = make_trace(root / "trace")
    analysis = analyze(trace, bootstrap=0, progress=False)
    files = {
        "analysis": {k: analysis[k] for k in ("meta", "distribution")},
        "cache": simulate_cache(
            trace,
            policies=("lru", "belady"),
            expert_bytes=1000,
            bandwidth_gbps=10.0,
            budget_bytes=BUDGETS,
            progress=False,
        ),
        "cache_plain": simulate_cache(trace, policies=("lru",), progress=False),
        "budget_untimed": simulate_cache(
            trace, policies=("lru",), expert_bytes=1000, budget_bytes=BUDGETS, progress=False
        ),
        "balance": simulate_balance(trace, devices=2, batch_tokens=16, decode_batch=4),
        "balance_plain": simulate_balance(trace, devices=2, batch_tokens=16),
        "distinct": simulate_distinct(trace, batch=4),
        # Another trace: fewer documents (other tokens), and the same documents at other layers.
        "other_tokens": simulate_distinct(make_trace(root / "fewer", num_docs=5), batch=4),
        "other_layers": simulate_distinct(make_trace(root / "layers", layers=(0, 3, 5)), batch=4),
    }
    for name, payload in files.items():
        (root / f"{name}.json").write_text(json.dumps(payload))
    return root, files


def run(root, out, *inputs: str):
    """`routelens report` on the fixture's trace with (flag, name of a fixture file) pairs."""
    args = ["report", str(root / "trace"), "-o", str(out), "-q", "--analysis", str(root / "analysis.json")]
    for flag, name in zip(inputs[::2], inputs[1::2]):
        args += [flag, str(root / f"{name}.json")]
    return CliRunner().invoke(app, args)


def section(text: str, name: str) -> str:
    return text.split(f'<section id="{name}">')[1].split("</section>")[0]


@pytest.fixture(scope="module")
def page(setup, tmp_path_factory) -> str:
    root, _ = setup
    out = tmp_path_factory.mktemp("page") / "r.html"
    result = run(root, out, "--cache", "cache", "--balance", "balance", "--distinct", "distinct")
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8")


def rows(html: str) -> list[list[str]]:
    """The body rows of every table in `html`, as lists of cell HTML."""
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr[^>]*>(<td>.*?)</tr>", html)]


def test_budget_table_has_best_and_uniform_split_per_budget(setup, page):
    _, files = setup
    budget = files["cache"]["cache_budget"]
    html = section(page, "cache").split("Memory budget")[1]
    assert "dynamic programming" in html and "same bytes" in html and "load time / token" in html
    table = rows(html)
    assert len(table) == 2 * len(budget) * len(BUDGETS)
    i = 0
    for policy, by_total in budget.items():
        for total in sorted(by_total, key=int):
            for name in ("best", "uniform"):
                entry = by_total[total][name]
                layers = list(entry["split"])
                cells = table[i]
                assert cells[0] == policy and cells[2] == name
                assert f"{by_total[total]['slots']:,} experts" in cells[1]
                assert cells[3:6] == [
                    pct(entry["hit_rate"], 2),
                    num(entry["loads_per_token"]),
                    _seconds(entry["load_seconds_per_token"]),
                ]
                assert cells[6] == " ".join(str(entry["split"][x]) for x in layers)
                i += 1
    # The exact split never loses to the uniform one at the same bytes.
    assert all(
        row["best"]["hit_rate"] >= row["uniform"]["hit_rate"] - 1e-12 for by in budget.values() for row in by.values()
    )


def test_budget_without_bandwidth_has_no_time_column(setup, tmp_path):
    root, files = setup
    assert run(root, tmp_path / "r.html", "--cache", "budget_untimed").exit_code == 0
    html = section((tmp_path / "r.html").read_text(), "cache").split("Memory budget")[1]
    assert "load time" not in html
    entry = files["budget_untimed"]["cache_budget"]["lru"][str(BUDGETS[1])]["uniform"]
    assert rows(html)[-1][3:5] == [pct(entry["hit_rate"], 2), num(entry["loads_per_token"])]


def test_decode_table_puts_prefill_beside_decode(setup, page):
    _, files = setup
    result = files["balance"]
    html = section(page, "balance").split("Prefill batches and decode steps")[1]
    assert f"{result['balance_meta']['decode_steps']:,} steps" in html
    table = rows(html)
    cfs = sorted(result["balance"]["round_robin"], key=float)
    assert len(table) == 2 * len(result["balance"])
    for i, placement in enumerate(result["balance"]):
        for j, (key, what) in enumerate((("balance", "16 consecutive tokens"), ("balance_decode", "4 sequences"))):
            cells = table[2 * i + j]
            assert cells[0] == placement and what in cells[1]
            by_cf = result[key][placement]
            assert cells[2:] == [
                c for cf in cfs for c in (pct(by_cf[cf]["dropped"], 2), num(by_cf[cf]["imbalance_max_mean"], 2))
            ]
    assert result["balance_decode"] != result["balance"]  # the two batchings differ, so the rows test something


def test_distinct_section_per_layer_against_chance(setup, page):
    _, files = setup
    result = files["distinct"]
    html = section(page, "distinct")
    table = rows(html)
    for cells, (layer, v) in zip(table, result["distinct"].items()):
        d = result["distinct_decode"][layer]
        assert cells == [
            layer,
            num(v["mean"], 2),
            str(v["p95"]),
            str(v["max"]),
            num(d["mean"], 2),
            str(d["p95"]),
            str(d["max"]),
        ]
    chance = num(result["distinct_meta"]["uniform"], 2)
    assert table[-1] == ["uniform routing", chance, "–", "–", chance, "–", "–"]
    assert "B = 4 consecutive tokens" in html and "B = 4 sequences decoding" in html
    assert f"uniform routing, {chance}" in html and "<svg" in html


def test_chance_is_computed_when_the_file_lacks_it(setup, tmp_path):
    root, files = setup
    payload = json.loads(json.dumps(files["distinct"]))
    meta = payload["distinct_meta"]
    expected = num(meta.pop("uniform"), 2)  # the simulator's own value
    (root / "no_uniform.json").write_text(json.dumps(payload))
    assert run(root, tmp_path / "a.html", "--distinct", "no_uniform").exit_code == 0
    assert rows(section((tmp_path / "a.html").read_text(), "distinct"))[-1][:2] == ["uniform routing", expected]
    assert num(uniform_distinct(meta["num_experts"], meta["top_k"], meta["batch"]), 2) == expected
    del meta["batch"]  # no batch size: no chance line rather than a guess
    (root / "no_batch.json").write_text(json.dumps(payload))
    assert run(root, tmp_path / "b.html", "--distinct", "no_batch").exit_code == 0
    assert "uniform routing" not in section((tmp_path / "b.html").read_text(), "distinct")


def test_absent_inputs_leave_the_what_ifs_out(setup, tmp_path):
    root, _ = setup
    result = run(root, tmp_path / "r.html", "--cache", "cache_plain", "--balance", "balance_plain")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.html").read_text()
    assert '<section id="cache">' in text and "Memory budget" not in text
    assert '<section id="balance">' in text and "decode steps" not in text
    assert '<section id="distinct">' not in text
    assert "<b>distinct</b>: not in this analysis" in text and "--distinct distinct.json" in text


def test_names_from_the_json_are_escaped(setup, tmp_path):
    root, files = setup
    payload = json.loads(json.dumps(files["balance"]))
    payload["balance_decode"]["<b>rr</b>"] = payload["balance_decode"].pop("round_robin")
    (root / "hostile.json").write_text(json.dumps(payload))
    assert run(root, tmp_path / "r.html", "--balance", "hostile").exit_code == 0
    html = section((tmp_path / "r.html").read_text(), "balance")
    assert "&lt;b&gt;rr&lt;/b&gt;" in html and "<b>rr</b>" not in html


@pytest.mark.parametrize(
    "name,message",
    [
        ("other_tokens", "tokens="),
        ("other_layers", "has layers 0,3,5 but the trace"),
        ("cache", "holds no `distinct` result; pass the file `routelens simulate distinct"),
    ],
)
def test_distinct_of_another_trace_is_refused(setup, tmp_path, name, message):
    root, _ = setup
    result = run(root, tmp_path / "r.html", "--distinct", name)
    assert result.exit_code == 2, result.output
    assert message in result.output and "--distinct" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_distinct_figure_draws_the_means_and_the_chance_line():
    curves = {"consecutive": {"0": {"mean": 3.0}, "7": {"mean": 4.5}}, "decode": {"7": {"mean": 5.0}}}
    ax = distinct_figure(curves, ["0", "7"], 8, 5.5).axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 7])  # true layer indices
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [3.0, 4.5])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [np.nan, 5.0])  # a missing layer is a gap, not zero
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [5.5, 5.5])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["consecutive", "decode", "uniform routing"]
