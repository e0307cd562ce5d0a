"""`write_report(trace, analysis, out_html)`: the self-contained HTML report of a routing trace.

The analysis dict (from `routelens.analysis.analyze`, or read back from its `--json`, possibly
merged with the `pos`, `cache`, `balance`, `distinct` and `compare` results) decides which sections appear: a section
whose keys are absent is listed as not available, one whose keys have an unexpected shape is
skipped with a note, and neither stops the report. Output is written atomically: the figure
folder and the HTML file appear whole or not at all.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from routelens.atomic import atomic_dir, atomic_path
from routelens.errors import RoutelensError
from routelens.report.figures_io import FigureSink, style
from routelens.report.figures_io import figure_formats as figure_formats_of
from routelens.report.html import Section, esc, page
from routelens.report.sections.balance import balance_section
from routelens.report.sections.cache import cache_section
from routelens.report.sections.coactivation import coactivation_section
from routelens.report.sections.compare import compare_section
from routelens.report.sections.confidence import confidence_section
from routelens.report.sections.context import ReportContext, spread_layers
from routelens.report.sections.distinct import distinct_section
from routelens.report.sections.distribution import distribution_section, domain_distance_section
from routelens.report.sections.importance import importance_section
from routelens.report.sections.locality import locality_section
from routelens.report.sections.pos import pos_section
from routelens.report.sections.replay import replay_section
from routelens.report.sections.saturation import saturation_section
from routelens.report.sections.summary import summary_section
from routelens.report.sections.tokens import token_view_section
from routelens.report.sections.vocabulary import vocabulary_section
from routelens.report.token_view import layer_columns
from routelens.store import Trace, meta_num_experts, open_trace
from routelens.version import VERSION

# (builder, what it needs, how to get it when absent) in page order; the summary comes first.
SECTIONS: list[tuple[Callable[[ReportContext], Section | None], str, str]] = [
    (distribution_section, "distribution", "`routelens analyze`"),
    (domain_distance_section, "domain_distance", "`routelens analyze` on a trace of two or more domains"),
    (locality_section, "locality", "`routelens analyze`"),
    (token_view_section, "token view", ""),
    (vocabulary_section, "vocabulary", "`routelens analyze`"),
    (coactivation_section, "coactivation", "`routelens analyze` (needs top-k > 1)"),
    (confidence_section, "confidence", "`routelens analyze` on a trace with weights or --store-probs"),
    (pos_section, "pos", "`routelens analyze --pos` on a trace with UPOS tags"),
    (
        saturation_section,
        "saturation",
        "`routelens.analysis.router_saturation` over checkpoint traces (`routelens demo` adds it)",
    ),
    (cache_section, "cache", "`routelens simulate cache --json cache.json`, passed as `--cache cache.json`"),
    (
        balance_section,
        "balance",
        "`routelens simulate balance --json balance.json`, passed as `--balance balance.json`",
    ),
    (
        distinct_section,
        "distinct",
        "`routelens simulate distinct --json distinct.json`, passed as `--distinct distinct.json`",
    ),
    (
        importance_section,
        "importance",
        "`routelens importance TRACE --json importance.json`, passed as `--importance importance.json`",
    ),
    (compare_section, "compare", ""),  # only when two traces were compared (`--compare`): no note otherwise
    (replay_section, "replay", ""),  # only with a replay report (`--replay`)
]
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def check_analysis(trace: Trace, analysis: dict) -> None:
    """Refuse an analysis computed on another trace (other layers, expert count, top-k, token count
    or domains)."""
    if not isinstance(analysis, dict):
        raise RoutelensError(
            f"the analysis is a {type(analysis).__name__}, not a JSON object; pass the file `routelens analyze --json` wrote."
        )
    meta = analysis.get("meta") or {}
    mine = {"num_experts": trace.num_experts, "top_k": trace.top_k, "layers": [str(x) for x in trace.layers]}
    theirs = {
        "num_experts": mine["num_experts"] if "num_experts" not in meta else meta_num_experts(meta, trace),
        "top_k": meta.get("top_k", mine["top_k"]),
        "layers": [str(x) for x in meta.get("layers", mine["layers"])],
    }
    # Two traces of one model and corpus layout differ in what they hold: their tokens and domains.
    for key, value in (("tokens", trace.num_tokens), ("domains", list(trace.domains))):
        if key in meta:
            mine[key], theirs[key] = value, meta[key]
    for key, value in mine.items():
        if theirs[key] != value:
            raise RoutelensError(
                f"the analysis has {key}={theirs[key]} but the trace at {trace.path} has {key}={value}; "
                "pass the analysis of this trace (or leave out --analysis and --json to compute it here)."
            )


def write_report(
    trace: Trace | str | os.PathLike,
    analysis: dict,
    out_html: str | os.PathLike,
    *,
    figures_dir: str | os.PathLike | None = None,
    token_view_layers: Sequence[int] | None = None,
    figure_formats: str | Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write the report of `trace` and its `analysis` to `out_html`; return its path.

    PNG (dpi 200) and PDF copies of every figure go to `figures_dir` (default: `<stem>_figures/`
    beside the HTML); `figure_formats` chooses other copies (`"png"`, `["png", "svg"]`, `"none"`;
    default `$ROUTELENS_FIGURE_FORMATS`, else PNG and PDF). `token_view_layers` are true layer indices (default: first, middle, last).
    `out_html` (and `figures_dir` when given) is locked for the run (`routelens.lock`): two reports
    into one page would replace each other's files, so the second is refused in one line.
    """
    from contextlib import ExitStack

    from routelens.lock import output_lock

    with ExitStack() as held:
        held.enter_context(output_lock(out_html, what="report"))
        if figures_dir is not None:
            held.enter_context(output_lock(figures_dir, what="report"))
        return write_report_unlocked(
            trace,
            analysis,
            out_html,
            figures_dir=figures_dir,
            token_view_layers=token_view_layers,
            figure_formats=figure_formats,
            progress=progress,
        )


def write_report_unlocked(
    trace: Trace | str | os.PathLike,
    analysis: dict,
    out_html: str | os.PathLike,
    *,
    figures_dir: str | os.PathLike | None = None,
    token_view_layers: Sequence[int] | None = None,
    figure_formats: str | Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """`write_report` for a caller that already holds the locks of `out_html` and `figures_dir`
    (`build_report`): a second `output_lock` of the same output, even in one process, is refused."""
    from routelens.progress import progress_bar

    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    check_analysis(trace, analysis)
    formats = figure_formats_of(figure_formats)
    out_html = Path(out_html)
    if out_html.is_dir():
        raise RoutelensError(f"-o {out_html} is a directory; give a file name such as {out_html / 'report.html'}.")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(figures_dir) if figures_dir is not None else out_html.with_name(f"{out_html.stem}_figures")
    layers = [str(x) for x in trace.layers]
    view = list(token_view_layers) if token_view_layers else [int(x) for x in spread_layers(layers, 3)]
    layer_columns(trace, view)  # a wrong --layers fails before any work

    # The HTML file and the figure folder are built under temporary names (the leftovers of a killed
    # run are removed here first) and renamed into place once whole: figures first, then the page.
    with atomic_path(out_html) as tmp_html, atomic_dir(figures_dir) as tmp_figures:
        ctx = ReportContext(
            trace=trace,
            analysis=analysis,
            sink=FigureSink(tmp_figures, formats=formats),
            layers=layers,
            domains=list(trace.domains),
            num_ids=trace.num_ids,
            top_k=trace.top_k,
            view_layers=view,
        )
        built: list[Section] = []
        with progress_bar(disable=not progress, transient=True) as bar, style():
            task = bar.add_task("report", total=len(SECTIONS) + 1, status="")
            for builder, key, how in SECTIONS:
                bar.update(task, status=key)
                section = _build(builder, key, how, ctx)
                if section is not None:
                    built.append(section)
                bar.advance(task)
            summary = summary_section(ctx)
            if ctx.notes:
                summary.body += (
                    '<h3>Not in this report</h3><ul class="skipped">'
                    + "".join(f"<li>{n}</li>" for n in ctx.notes)
                    + "</ul>"
                )
            bar.advance(task)
        tmp_html.write_text(_page(trace, [summary, *built]), encoding="utf-8")
    return out_html


def _build(builder, key: str, how: str, ctx: ReportContext) -> Section | None:
    try:
        section = builder(ctx)
    except _SHAPE_ERRORS as exc:
        message = f"section <b>{esc(key)}</b> skipped: the analysis' <code>{esc(key)}</code> has an unexpected shape ({esc(type(exc).__name__)}: {esc(exc)})."
        warnings.warn(f"report: section {key} skipped ({type(exc).__name__}: {exc})", stacklevel=2)
        ctx.notes.append(message)
        return None
    if section is None and how:
        ctx.notes.append(f"<b>{esc(key)}</b>: not in this analysis; get it with {_code(how)}.")
    return section


def _code(text: str) -> str:
    """Escape `text`, rendering its `backticked` parts as code."""
    parts = esc(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _page(trace: Trace, sections: list[Section]) -> str:
    model = (trace.manifest.get("model") or {}).get("name_or_path", "unknown model")
    subtitle = (
        f"{trace.num_tokens:,} tokens · {len(trace.layers)} MoE layers · top-{trace.top_k} of {trace.num_experts} "
        f"experts · {len(trace.domains)} domain{'s' if len(trace.domains) != 1 else ''} · trace <code>{esc(trace.path)}</code>"
    )
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = f"Made by routelens {esc(VERSION)} on {stamp}. Figures as PNG and PDF in the folder beside this file."
    return page(f"Routing report · {model}", subtitle, sections, footer)
