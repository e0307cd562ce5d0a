"""Figure of vocabulary specialization (OLMoE): the share of a token id's occurrences routed to its
top expert, against the layer, for input and next tokens."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.figures.base import BASELINE, floats, layer_axis
from routelens.report.figures_io import new_figure, style


def vocabulary_figure(
    series: dict[str, dict[str, float]], layers: Sequence[str], *, chance: float | dict[str, float] | None
) -> Figure:
    """Vocabulary specialization against the layer: one line per series (input / next tokens).
    `chance` is the count- and load-matched null per layer (a dict, drawn as a line), or one value."""
    x = [int(layer) for layer in layers]
    with style():
        fig = new_figure(6.2, 2.7)
        ax = fig.subplots()
        for (label, values), marker, ls in zip(series.items(), "os^", ("-", "--", ":")):
            ax.plot(x, floats(values[layer] for layer in layers), ls, marker=marker, ms=3, lw=1.2, label=label)
        if isinstance(chance, dict):
            ax.plot(
                x, floats(chance.get(layer) for layer in layers), **BASELINE, label="chance (count- and load-matched)"
            )
        elif chance is not None:
            ax.axhline(chance, **BASELINE, label="uniform routing")
        layer_axis(ax)
        ax.set_ylabel("share to its top expert")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
