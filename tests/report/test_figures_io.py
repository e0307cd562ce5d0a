"""Figures as inline SVG (ids unique per figure) and as PNG/PDF copies."""

from __future__ import annotations

import re

import matplotlib.image as mpimg

from routelens.report.figures_io import FigureSink, new_figure, style, to_inline_svg


def clipped_figure():
    with style():
        fig = new_figure(2.0, 1.0)
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], "o-")  # markers and clip paths both use <defs> ids
        ax.set_title("a <b> & c")
    return fig


def test_inline_svg_ids_are_prefixed_and_resolve():
    a = to_inline_svg(clipped_figure(), "f1-")
    b = to_inline_svg(clipped_figure(), "f2-")
    assert a.startswith("<svg") and "<?xml" not in a and "DOCTYPE" not in a and "<metadata" not in a
    ids_a = re.findall(r'\bid="([^"]+)"', a)
    ids_b = re.findall(r'\bid="([^"]+)"', b)
    assert ids_a and all(i.startswith("f1-") for i in ids_a) and all(i.startswith("f2-") for i in ids_b)
    refs = re.findall(r'(?:url\(#|href="#)([^)"]+)', a)
    assert refs and set(refs) <= set(ids_a)
    # Text stays text, escaped by the SVG writer.
    assert "a &lt;b&gt; &amp; c" in a
    # Sized by CSS up to its natural width (2 in = 192 px), aspect kept by the viewBox.
    assert 'style="max-width:192px"' in a and "viewBox=" in a


def test_sink_writes_png_at_200_dpi_and_pdf(tmp_path):
    sink = FigureSink(tmp_path)
    sink.add(clipped_figure(), "first one")
    sink.add(clipped_figure(), "second/one")
    assert sink.names == ["01-first-one", "02-second-one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "01-first-one.pdf",
        "01-first-one.png",
        "02-second-one.pdf",
        "02-second-one.png",
    ]
    image = mpimg.imread(tmp_path / "01-first-one.png")
    assert image.shape[:2] == (200, 400)  # 2 x 1 inches at dpi 200
    assert (tmp_path / "01-first-one.pdf").read_bytes().startswith(b"%PDF")


def test_sink_without_folder_only_returns_svg(tmp_path):
    svg = FigureSink(None).add(clipped_figure(), "x")
    assert svg.startswith("<svg") and list(tmp_path.iterdir()) == []
