"""Figure of the expert-parallel load simulation: the share of assignments dropped against the
capacity factor, one curve per expert placement."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures.base import BASELINE
from routelens.report.figures_io import new_figure, style


def balance_figure(balance: dict, cfs: Sequence[str]) -> Figure:
    """`balance` {placement: {cf: {"dropped": share, ...}}}; `cfs` the capacity factors in order."""
    with style():
        fig = new_figure(5.6, 2.6)
        ax = fig.subplots()
        for i, (placement, by_cf) in enumerate(balance.items()):
            xs = [float(cf) for cf in cfs if cf in by_cf]
            ax.plot(
                xs,
                [by_cf[cf]["dropped"] for cf in cfs if cf in by_cf],
                "-o",
                ms=3,
                lw=1.2,
                color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)],
                label=placement,
            )
        ax.axhline(0, **BASELINE)
        ax.set_xlabel("capacity factor CF")
        ax.set_ylabel("share of assignments dropped")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend()
    return fig
