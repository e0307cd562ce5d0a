"""What every report section is built from: the trace, the analysis dict and the figure sink
(`ReportContext`), and the choice of layers to show where all of them would not fit.

Every section builder takes the context and returns a `Section`, or None when the analysis lacks
its keys (the report then lists it as not available instead of failing). Layer keys are the
true layer indices written as strings, as in the analysis JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from routelens.report.figures_io import FigureSink
from routelens.store import Trace


@dataclass
class ReportContext:
    trace: Trace
    analysis: dict
    sink: FigureSink
    layers: list[str]  # every MoE layer, true indices as strings
    domains: list[str]  # the trace's domains (the pooled `all` is not one)
    num_ids: int  # experts + zero-computation experts: every per-expert axis is this wide
    top_k: int
    view_layers: list[int]  # layers of the token view
    token_docs: int = 2  # documents per domain in the token view
    token_count: int = 160  # tokens per document in the token view
    notes: list[str] = field(default_factory=list)  # sections left out, and why

    def present(self, mapping: dict) -> list[str]:
        """The trace's domains that `mapping` has, in trace order."""
        return [d for d in self.domains if d in mapping]

    @property
    def table_layers(self) -> list[str]:
        """Layers of the compact tables: all when few, else first, middle and last (as Mixtral)."""
        return self.layers if len(self.layers) <= 4 else spread_layers(self.layers, 3)


def spread_layers(layers: Sequence[str], count: int = 3) -> list[str]:
    """`count` layers spread evenly from first to last (Mixtral shows layers 0, 15 and 31)."""
    if len(layers) <= count:
        return list(layers)
    picks = np.unique(np.round(np.linspace(0, len(layers) - 1, count)).astype(int))
    return [layers[i] for i in picks]


def is_scalar(value) -> bool:
    """A JSON number (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
