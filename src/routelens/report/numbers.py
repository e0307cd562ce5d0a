"""Small pure functions the report needs when an analysis leaves something out, and its colours.

The analyses compute the statistics; the report only falls back on these when a key is absent
(e.g. an analysis saved without `domain_distance` still gets Jensen-Shannon heatmaps, without
confidence intervals) and to choose which layers to show where all of them would not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb, to_hex, to_rgb

# Domains: a calm qualitative palette; the pooled domain `all` is drawn in dark grey.
DOMAIN_COLORS = (
    "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3",
    "#937860", "#da8bc3", "#ccb974", "#64b5cd", "#8c8c8c",
)  # fmt: skip
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


def random_locality(num_experts: int, top_k: int) -> dict[str, float]:
    """Exact chance levels of `first` (1/E) and `any` (1 - C(E-k, k) / C(E, k))."""
    return {
        "first": 1.0 / num_experts,
        "any": 1.0 - comb(num_experts - top_k, top_k) / comb(num_experts, top_k),
    }


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits (0 for equal distributions, 1 for disjoint supports)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def js_matrix(distribution: dict, domains: Sequence[str], layer: str) -> np.ndarray:
    """(domains, domains) Jensen-Shannon divergences between the domains' expert distributions."""
    n = len(domains)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = js_divergence(distribution[domains[i]][layer], distribution[domains[j]][layer])
    return out


def spread_layers(layers: Sequence[str], count: int = 3) -> list[str]:
    """`count` layers spread evenly from first to last (Mixtral shows layers 0, 15 and 31)."""
    if len(layers) <= count:
        return list(layers)
    picks = np.unique(np.round(np.linspace(0, len(layers) - 1, count)).astype(int))
    return [layers[i] for i in picks]
