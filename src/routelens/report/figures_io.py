"""Matplotlib figures -> inline SVG for the HTML report, plus PNG (dpi 200) and PDF copies on disk.

Which copies are written is the report's `figure_formats` (`routelens report --figure-formats`),
by default `$ROUTELENS_FIGURE_FORMATS` or else PNG and PDF. PDFs embed their TrueType font subset
(`pdf.fonttype: 42`), which costs more than drawing the figure: a report of many figures written
only for the page, or on a slow machine, can ask for `png` or `none`.

The report must open with no network, so every figure is embedded as SVG markup. Several SVGs
share one HTML document, and matplotlib names its clip paths, markers and glyphs with ids that
may repeat between figures; each figure's ids therefore get a unique prefix. Text stays text
(`svg.fonttype: none`): smaller files, selectable labels, the page's own fonts.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are only ever written to files and strings

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from routelens.errors import RoutelensError

FIGURE_FORMATS = ("png", "pdf", "svg")  # what a copy on disk may be
DEFAULT_FIGURE_FORMATS = ("png", "pdf")
FIGURE_FORMATS_ENV = "ROUTELENS_FIGURE_FORMATS"

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


def figure_formats(value: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The copies each figure gets on disk: `value` (a list, or text such as `"png,pdf"`; `"none"` or
    empty for none), else `$ROUTELENS_FIGURE_FORMATS`, else PNG and PDF."""
    where = "--figure-formats"
    if value is None:
        value = os.environ.get(FIGURE_FORMATS_ENV)
        where = f"${FIGURE_FORMATS_ENV}"
        if value is None:
            return DEFAULT_FIGURE_FORMATS
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(name).strip().lower().lstrip(".") for name in names]
    names = [name for name in names if name]
    if names == ["none"]:
        return ()
    wrong = [name for name in names if name not in FIGURE_FORMATS]
    if wrong:
        raise RoutelensError(
            f"{where} {wrong[0]!r} is not a figure format; give a comma-separated list of "
            f"{', '.join(FIGURE_FORMATS)}, or none (for example --figure-formats png,pdf)."
        )
    return tuple(dict.fromkeys(names))


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
    """Collects the report's figures: returns inline SVG, writes `NN-name.<format>` into `folder`."""

    folder: Path | None  # None: keep no copies (inline SVG only)
    dpi: int = 200
    formats: tuple[str, ...] = DEFAULT_FIGURE_FORMATS
    names: list[str] = field(default_factory=list)

    def add(self, fig: Figure, name: str) -> str:
        index = len(self.names) + 1
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "figure"
        stem = f"{index:02d}-{slug}"
        self.names.append(stem)
        svg = to_inline_svg(fig, prefix=f"f{index}-")
        # The SVG draw has laid the figure out; freezing it spares each copy a layout pass.
        fig.set_layout_engine("none")
        if self.folder is not None and self.formats:
            with plt.rc_context(RC):
                for fmt in self.formats:
                    if fmt == "svg":  # the page's own markup, as a file (its ids prefixed as inline)
                        (self.folder / f"{stem}.svg").write_text(svg + "\n", encoding="utf-8")
                    else:
                        fig.savefig(self.folder / f"{stem}.{fmt}", **self._save_options(fmt))
        return svg

    def _save_options(self, fmt: str) -> dict:
        if fmt == "png":
            return {"dpi": self.dpi}
        return {"metadata": {"CreationDate": None}}  # fixed: the same report twice gives the same bytes
