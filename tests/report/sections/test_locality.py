"""The locality section's uniform-random row: the analysis' `random_baseline` when the analysis
carries no `locality_baseline`, checked against enumeration, and shown in the table."""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np
import pytest

from routelens.analysis.locality import random_baseline
from routelens.report.html import pct


@pytest.mark.parametrize("E,k", [(8, 1), (8, 2), (6, 3), (16, 4)])
def test_random_baseline_matches_enumeration(E, k):
    sets = [set(c) for c in combinations(range(E), k)]
    overlap = np.mean([bool(a & b) for a in sets for b in sets])
    got = random_baseline(E, k)
    assert got["first"] == pytest.approx(1 / E)
    assert got["any"] == pytest.approx(overlap)


def test_the_table_falls_back_on_the_random_baseline(tmp_path, built):
    from routelens.report import write_report

    analysis = {k: built.analysis[k] for k in ("locality", "meta")}
    out = write_report(built.trace, analysis, tmp_path / "r.html", progress=False)
    row = re.search(r'<tr class="base"><td>uniform random</td>(.*?)</tr>', out.read_text(encoding="utf-8")).group(1)
    base = random_baseline(built.trace.num_experts, built.trace.top_k)
    assert pct(base["first"]) in row and pct(base["any"]) in row
