"""The cache section: loads per token beside the hit rates, and Belady called the optimal
demand-paging policy, not a bound on prefetching."""

from __future__ import annotations

import re

from routelens.report.html import num


def test_loads_per_token_shown_and_belady_not_called_a_bound(tmp_path, built):
    from routelens.report import write_report

    analysis = {k: v for k, v in built.analysis.items() if k in ("meta", "cache")}
    layers = list(analysis["cache"]["lru"])
    # Loads that differ per policy, so that the row shown is the policy's own mean over layers.
    analysis["cache_loads"] = {
        p: {x: {c: 0.25 * (i + 1) + 0.01 * int(x) for c in by_layer[x]} for x in layers}
        for i, (p, by_layer) in enumerate(analysis["cache"].items())
    }
    text = write_report(built.trace, analysis, tmp_path / "r.html", progress=False).read_text(encoding="utf-8")
    section = text.split('<section id="cache">')[1].split("</section>")[0]
    assert "Experts loaded per token" in section
    for i, policy in enumerate(analysis["cache"]):
        row = re.search(rf"<tr><td>{policy}</td>(.*?)</tr>", section.split("Experts loaded per token")[1]).group(1)
        assert num(0.25 * (i + 1) + 0.01 * sum(map(int, layers)) / len(layers)) in row
    assert "optimal demand-paging policy" in section and "offline bound" not in section
