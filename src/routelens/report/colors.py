"""The report's colours: one per domain (the pooled `all` in dark grey), one per expert as distinct
as the count allows, and a tint that keeps text readable on a coloured background."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb, to_hex, to_rgb

# Domains: a calm qualitative palette; the pooled domain `all` is drawn in dark grey.
DOMAIN_COLORS = (
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#ccb974",
    "#64b5cd",
    "#8c8c8c",
)
POOLED_COLOR = "#30343b"


def domain_color(domains: Sequence[str], name: str) -> str:
    if name == "all":
        return POOLED_COLOR
    own = [d for d in domains if d != "all"]
    return DOMAIN_COLORS[own.index(name) % len(DOMAIN_COLORS)] if name in own else "#999999"


def expert_colors(num_experts: int) -> list[str]:
    """One colour per expert, as distinct as the count allows (tab10/tab20, then spread hues)."""
    if num_experts <= 10:
        return [to_hex(c) for c in colormaps["tab10"].colors[:num_experts]]
    if num_experts <= 20:
        tab = colormaps["tab20"].colors
        return [to_hex(c) for c in (tab[0::2] + tab[1::2])[:num_experts]]
    # Golden-ratio hue steps with three lightness bands keep neighbours apart for any count.
    i = np.arange(num_experts)
    hues = (i * 0.618033988749895) % 1.0
    sat = np.array([0.65, 0.45, 0.8])[i % 3]
    val = np.array([0.85, 0.95, 0.7])[(i // 3) % 3]
    return [to_hex(c) for c in hsv_to_rgb(np.stack([hues, sat, val], axis=1))]


def tint(color: str, amount: float = 0.45) -> str:
    """`color` mixed with white (amount 0: unchanged, 1: white): token backgrounds stay readable."""
    rgb = np.array(to_rgb(color))
    return to_hex(rgb + (1.0 - rgb) * amount)
