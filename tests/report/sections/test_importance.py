"""The importance section (`routelens report --importance`): present only when given, with its
figure and the coverage table read from the importance of the same trace; one from another trace
is refused in one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from routelens.pruning import expert_importance
from routelens.report.figures.importance import coverage
from routelens.report.html import pct
from tests.pruning.planted import write_planted


def test_section_shows_the_coverage_of_the_most_used_experts(tmp_path, built):
    from routelens.report import write_report

    importance = expert_importance(built.trace, progress=False)
    analysis = {k: v for k, v in built.analysis.items() if k == "meta"} | {"importance": importance}
    text = write_report(built.trace, analysis, tmp_path / "r.html", progress=False).read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)">', text)[-1] == "importance"  # last, after the simulators
    section = text.split('<section id="importance">')[1].split("</section>")[0]
    assert (
        section.count("<svg") == 1
        and "frequency" in section
        and "reap" not in section.split("<svg")[1].split("</svg>")[0]
    )
    layer = str(built.trace.layers[0])
    freq = np.array(importance["overall"]["frequency"][layer])
    row = re.search(rf"<tr><td>{layer}</td>(.*?)</tr>", section).group(1)
    assert pct(float(np.sort(freq)[::-1][:4].sum())) in row  # 4 of 8 kept
    assert np.allclose(coverage(freq[None])[0, -1], 1.0)


@pytest.mark.slow
def test_report_cli_takes_importance_and_refuses_another_traces(tmp_path, built):
    own = tmp_path / "imp.json"
    own.write_text(json.dumps(expert_importance(built.trace, progress=False)))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(expert_importance(write_planted(tmp_path / "planted"), progress=False)))
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps(built.analysis))
    base = ["report", str(built.trace.path), "--analysis", str(analysis), "--quiet"]
    ok = CliRunner().invoke(app, [*base, "--importance", str(own), "-o", str(tmp_path / "r.html")])
    assert ok.exit_code == 0, ok.output
    assert '<section id="importance">' in (tmp_path / "r.html").read_text(encoding="utf-8")
    bad = CliRunner().invoke(app, [*base, "--importance", str(other), "-o", str(tmp_path / "s.html")])
    assert bad.exit_code == 2 and "--importance" in bad.output and "layers=" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "s.html").exists()
