"""The self-contained HTML report of a routing trace: `write_report(trace, analysis, out_html)`.

One HTML file with inline CSS and inline SVG figures (viewable with no network), plus PNG and
PDF copies of every figure in `<stem>_figures/` beside it. Sections render from the analysis
dict's keys and are skipped, with a note, where a key is absent.
"""

from routelens.report.build import check_analysis, write_report

__all__ = ["check_analysis", "write_report"]
