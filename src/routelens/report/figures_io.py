"""Matplotlib figures -> inline SVG for the HTML report, plus PNG (dpi 200) and PDF copies on disk.

The report must open with no network, so every figure is embedded as SVG markup. Several SVGs
share one HTML document, and matplotlib names its clip paths, markers and glyphs with ids that
may repeat between figures; each figure's ids therefore get a unique prefix. Text stays text
(`svg.fonttype: none`): smaller files, selectable labels, the page's own fonts.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are only ever written to files and strings

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

# House look of every figure: small type, no top/right spines, light horizontal grid.
RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "routelens",  # deterministic ids: the same report twice gives the same bytes
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#5f6670",
    "axes.linewidth": 0.7,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "xtick.color": "#3b4048",
    "ytick.color": "#3b4048",
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.bbox": None,  # constrained layout already fits; "tight" would cost a second draw per file
    "pdf.fonttype": 42,  # embed TrueType, so the PDF copies paste into papers cleanly
    # Labels are data (domain names, policies, checkpoints): a domain called `$\\foo$` is a name, not
    # a formula, and as mathtext it would fail to parse and take its section with it.
    "text.parse_math": False,
}

_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^)"]+)')
_HEADER = re.compile(r"^.*?(<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def style():
    """Context under which figures are built, so their axes take the house style."""
    return plt.rc_context(RC)


def new_figure(width: float, height: float) -> Figure:
    """A figure outside pyplot's registry (nothing to close, nothing leaks if drawing fails)."""
    return Figure(figsize=(width, height), layout="constrained")


def to_inline_svg(fig: Figure, prefix: str) -> str:
    """The figure as an `<svg>` element whose ids all start with `prefix` (unique per figure)."""
    buf = io.StringIO()
    with plt.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _HEADER.sub(r"\1", buf.getvalue(), count=1)
    svg = _METADATA.sub("", svg)
    svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", svg)
    # Let CSS shrink the figure to the page (the viewBox keeps the aspect ratio), never beyond
    # its natural size, so a one-panel figure keeps its type size.
    width_px = fig.get_figwidth() * 96
    svg = re.sub(
        r'(<svg\b[^>]*?)\swidth="[^"]*"\s+height="[^"]*"', rf'\1 style="max-width:{width_px:.0f}px"', svg, count=1
    )
    return svg.strip()


@dataclass
class FigureSink:
    """Collects the report's figures: returns inline SVG, writes `NN-name.png`/`.pdf` into `folder`."""

    folder: Path | None  # None: keep no copies (inline SVG only)
    dpi: int = 200
    names: list[str] = field(default_factory=list)

    def add(self, fig: Figure, name: str) -> str:
        index = len(self.names) + 1
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "figure"
        stem = f"{index:02d}-{slug}"
        self.names.append(stem)
        svg = to_inline_svg(fig, prefix=f"f{index}-")
        # The SVG draw has laid the figure out; freezing it spares each copy a layout pass.
        fig.set_layout_engine("none")
        if self.folder is not None:
            with plt.rc_context(RC):
                fig.savefig(self.folder / f"{stem}.png", dpi=self.dpi)
                fig.savefig(self.folder / f"{stem}.pdf", metadata={"CreationDate": None})
        return svg
