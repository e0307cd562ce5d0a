"""write_report: every section and figure of a full analysis, graceful skips, refusal of a foreign
analysis, atomic output, and a page that needs nothing from the network."""

from __future__ import annotations

import copy
import re

import pytest

from routelens.errors import RoutelensError
from routelens.report import write_report
from routelens.report.figures_io import FIGURE_FORMATS_ENV
from routelens.report.html import pct
from tests.report.conftest import LAYERS, make_trace

# Figures of the full report, in page order (what each section is expected to draw).
EXPECTED_FIGURES = [
    "distribution",
    "distribution-first",
    "distribution-per-token",
    "domain-distance-by-layer",
    "domain-distance-heatmaps",
    "locality-by-layer",
    "locality-by-distance",
    "vocabulary",
    "coactivation",
    "confidence-top1_weight",
    "pos-specialization",
    "pos-ablation",
    "pos-path-map",
    "saturation",
    "cache",
    "balance",
    "distinct",
    "importance",
]
SECTIONS = [
    "summary",
    "distribution",
    "domain-distance",
    "locality",
    "token-view",
    "vocabulary",
    "coactivation",
    "confidence",
    "pos",
    "saturation",
    "cache",
    "balance",
    "distinct",
    "importance",
]


def figure_svgs(text: str) -> list[str]:
    return re.findall(r'<figure class="fig[^"]*">(<svg.*?</svg>)', text, re.S)


def test_every_section_and_figure_is_there(built):
    ids = re.findall(r'<section id="([^"]+)">', built.text)
    assert ids == SECTIONS
    stems = sorted(p.stem for p in built.figures.glob("*.png"))
    assert stems == [f"{i + 1:02d}-{name}" for i, name in enumerate(EXPECTED_FIGURES)]
    assert sorted(p.suffix for p in built.figures.iterdir()) == [".png"] * len(stems)  # the suite's formats
    assert len(figure_svgs(built.text)) == len(EXPECTED_FIGURES) == built.text.count("<svg")
    assert "Not in this report" not in built.text  # nothing was skipped


def test_distribution_figure_has_every_layer_and_domain(built):
    svg = figure_svgs(built.text)[0]
    for layer in LAYERS:
        assert f">layer {layer}<" in svg
    for domain in built.trace.domains:
        assert f">{domain}<" in svg  # the legend


def test_locality_table_carries_the_analysis_values(built):
    section = built.text.split('<section id="locality">')[1].split("</section>")[0]
    table = section.split("<table")[1].split("</table>")[0]
    loc, perm = built.analysis["locality"], built.analysis["locality_permuted"]
    for domain in [*built.trace.domains, "all"]:
        for layer in map(str, LAYERS):
            for kind in ("first", "any"):
                assert pct(loc[domain][layer][kind]) in table
                assert f"perm. {pct(perm[domain][layer][kind])}" in table
    assert table.count("12.5%") == len(LAYERS) and table.count("46.4%") == len(LAYERS)  # the random baselines


def test_saturation_table_carries_every_checkpoint(built):
    section = built.text.split('<section id="saturation">')[1].split("</section>")[0]
    sat = built.analysis["saturation"]
    for label in sat["checkpoints"]:
        assert f"<th>{label}</th>" in section
    for layer in map(str, LAYERS):
        for value in sat["topk"][layer]:
            assert pct(value) in section


def test_page_is_self_contained(built):
    text = built.text
    assert not re.search(r"<(script|link|img|iframe)\b", text, re.I)
    assert not re.search(r"\b(src|href)=\"(?!#|data:)", text)  # in-page anchors and data URIs only
    assert "@import" not in text and "url(http" not in text
    # SVG ids are unique across the page, and every reference resolves inside it.
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'(?:url\(#|href="#)([^)"]+)', text))
    assert refs <= set(ids)


def test_missing_optional_sections_are_skipped(tmp_path, built):
    trace = make_trace(tmp_path / "t")
    core = {
        k: built.analysis[k]
        for k in (
            "meta",
            "distribution",
            "locality",
            "locality_baseline",
            "locality_permuted",
            "vocabulary",
            "coactivation",
        )
    }
    out = write_report(trace, core, tmp_path / "r.html", progress=False)
    text = out.read_text()
    ids = re.findall(r'<section id="([^"]+)">', text)
    assert ids == ["summary", "distribution", "domain-distance", "locality", "token-view", "vocabulary", "coactivation"]
    assert "Not in this report" in text and "analyze --pos" in text
    # Without domain_distance the divergences are computed from the distributions, without intervals.
    assert "no bootstrap intervals" in text
    assert len(list((tmp_path / "r_figures").glob("*.png"))) == len(figure_svgs(text)) == 6


def test_only_the_summary_and_token_view_without_any_analysis(tmp_path):
    trace = make_trace(tmp_path / "t")
    text = write_report(trace, {}, tmp_path / "r.html", progress=False).read_text()
    assert re.findall(r'<section id="([^"]+)">', text) == ["summary", "token-view"]
    assert "<svg" not in text


def test_malformed_section_is_skipped_with_a_note(tmp_path, built):
    trace = make_trace(tmp_path / "t")
    broken = copy.deepcopy({k: built.analysis[k] for k in ("meta", "coactivation", "cache", "balance")})
    broken["coactivation"] = {"0": "not a matrix"}
    broken["cache"]["lru"]["0"] = [0.5, 0.7]  # a list where capacities should be keys
    with pytest.warns(UserWarning, match="section"):
        text = write_report(trace, broken, tmp_path / "r.html", progress=False).read_text()
    assert '<section id="coactivation">' not in text
    assert '<section id="cache">' not in text
    assert text.count("unexpected shape") == 2
    assert '<section id="balance">' in text  # the rest is intact


def test_analysis_of_another_trace_is_refused(tmp_path, built):
    trace = make_trace(tmp_path / "t", layers=(0, 1))
    with pytest.raises(RoutelensError, match="layers=.*leave out --analysis and --json"):
        write_report(trace, built.analysis, tmp_path / "r.html", progress=False)
    assert not (tmp_path / "r.html").exists()


def test_bad_token_view_layer_names_the_choices(tmp_path, built):
    with pytest.raises(RoutelensError, match=r"--layers 5: .*0,3,7"):
        write_report(built.trace, {}, tmp_path / "r.html", token_view_layers=[0, 5], progress=False)


def test_failure_leaves_no_partial_output(tmp_path, built, monkeypatch):
    out = tmp_path / "r.html"
    write_report(built.trace, {}, out, progress=False)
    before = out.read_bytes()
    (tmp_path / "r_figures" / "keep.txt").write_text("old")

    def boom(ctx):
        raise RuntimeError("disk full")

    monkeypatch.setattr("routelens.report.build.SECTIONS", [(boom, "vocabulary", "")])
    with pytest.raises(RuntimeError):
        write_report(built.trace, built.analysis, out, progress=False)
    assert out.read_bytes() == before  # the old report is untouched
    assert (tmp_path / "r_figures" / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r_figures"]  # no temporaries left


def test_figures_dir_option_and_rewrite(tmp_path, built, monkeypatch):
    monkeypatch.delenv(FIGURE_FORMATS_ENV)  # the default a user gets: PNG and PDF
    out = write_report(
        built.trace,
        {"vocabulary": built.analysis["vocabulary"]},
        tmp_path / "a" / "r.html",
        figures_dir=tmp_path / "figs",
        progress=False,
    )
    assert [p.name for p in sorted((tmp_path / "figs").iterdir())] == ["01-vocabulary.pdf", "01-vocabulary.png"]
    assert (tmp_path / "figs" / "01-vocabulary.pdf").read_bytes().startswith(b"%PDF")
    # Writing again replaces the folder: no figure of the first run lingers.
    write_report(built.trace, {}, out, figures_dir=tmp_path / "figs", progress=False)
    assert list((tmp_path / "figs").iterdir()) == []


@pytest.mark.parametrize(
    ("formats", "where", "suffixes"),
    [
        ("pdf,svg", "argument", [".pdf", ".svg"]),
        (["SVG", ".png", "svg"], "argument", [".png", ".svg"]),
        ("none", "argument", []),
        ("", "argument", []),
        ("pdf", "environment", [".pdf"]),
        ("none", "environment", []),
    ],
)
def test_figure_formats_choose_the_copies(tmp_path, built, monkeypatch, formats, where, suffixes):
    part = {"vocabulary": built.analysis["vocabulary"]}
    if where == "environment":
        monkeypatch.setenv(FIGURE_FORMATS_ENV, formats)
        out = write_report(built.trace, part, tmp_path / "r.html", progress=False)
    else:
        out = write_report(built.trace, part, tmp_path / "r.html", figure_formats=formats, progress=False)
    copies = sorted((tmp_path / "r_figures").iterdir())
    assert [p.suffix for p in copies] == suffixes and all(p.stem == "01-vocabulary" for p in copies)
    page_svg = figure_svgs(out.read_text(encoding="utf-8"))
    assert len(page_svg) == 1  # the page itself never depends on the copies
    for p in copies:
        head = p.read_bytes()[:5]
        assert head == {".pdf": b"%PDF-", ".png": b"\x89PNG\r", ".svg": b"<svg "}[p.suffix]
    if ".svg" in suffixes:
        assert (tmp_path / "r_figures" / "01-vocabulary.svg").read_text(encoding="utf-8").strip() == page_svg[0]


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_an_unknown_figure_format_is_refused_before_any_work(tmp_path, built, monkeypatch, where):
    part = {"vocabulary": built.analysis["vocabulary"]}
    kwargs = {"figure_formats": "png,jpg"} if where == "argument" else {}
    if where == "environment":
        monkeypatch.setenv(FIGURE_FORMATS_ENV, "png,jpg")
    name = "--figure-formats" if where == "argument" else f"${FIGURE_FORMATS_ENV}"
    with pytest.raises(RoutelensError, match=re.escape(f"{name} 'jpg' is not a figure format")):
        write_report(built.trace, part, tmp_path / "r.html", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_top1_with_many_experts(tmp_path):
    from routelens.analysis import analyze

    trace = make_trace(tmp_path / "t", layers=(5,), num_experts=300, top_k=1, first_dist={})
    analysis = analyze(trace, bootstrap=0, progress=False)
    text = write_report(trace, analysis, tmp_path / "r.html", progress=False).read_text()
    ids = re.findall(r'<section id="([^"]+)">', text)
    assert "coactivation" not in ids and "needs top-k &gt; 1" in text
    locality = text.split('<section id="locality">')[1]
    assert "First choice" in locality and "First or second" not in locality and "0.3%" in locality  # 1/300
    assert re.findall(r'class="chip"', text).__len__() == 300  # one legend colour per expert


def test_outputs_follow_the_umask_and_dead_runs_leftovers_are_removed(tmp_path, built):
    import os
    import stat
    import subprocess
    import sys

    from routelens.atomic import temp_prefix

    gone = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    stale_dir = tmp_path / (temp_prefix(".r_figures.", pid=gone) + "abc.tmp")  # a killed run's figure folder
    (stale_dir / "half").mkdir(parents=True)
    stale_html = tmp_path / (temp_prefix(".r.html.", pid=gone) + "abc.tmp")
    stale_html.write_text("half a page")
    live = tmp_path / (temp_prefix(".r_figures.") + "xyz.tmp")  # a run still writing (here: ours)
    live.mkdir()
    old = os.umask(0o022)
    try:
        out = write_report(
            built.trace, {"vocabulary": built.analysis["vocabulary"]}, tmp_path / "r.html", progress=False
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "r_figures").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "r_figures").iterdir()} == {0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.html", "r_figures", live.name])
