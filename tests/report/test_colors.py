"""The report's colours: one distinct colour per expert for any count, tints towards white."""

from __future__ import annotations

import pytest

from routelens.report.colors import POOLED_COLOR, domain_color, expert_colors, tint


@pytest.mark.parametrize("E", [2, 8, 20, 64, 256])
def test_expert_colors_are_distinct(E):
    colors = expert_colors(E)
    assert len(colors) == E == len(set(colors))
    assert all(c.startswith("#") and len(c) == 7 for c in colors)


def test_tint_moves_towards_white():
    assert tint("#000000", 0.5) == "#808080"
    assert tint("#336699", 0.0) == "#336699" and tint("#336699", 1.0) == "#ffffff"


def test_domain_colors_pooled_grey_and_distinct():
    domains = ["code", "prose", "math"]
    colors = [domain_color(domains, d) for d in domains]
    assert len(set(colors)) == 3 and POOLED_COLOR not in colors
    assert domain_color(domains, "all") == POOLED_COLOR
