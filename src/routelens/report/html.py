"""The page around the report's sections: inline CSS, navigation, tables, figures, method notes.

Everything the browser needs is in the one file: no scripts, no web fonts, no external links.
Every string that comes from data (domain names, token text, model names) goes through `esc`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

CSS = """
:root { --ink:#1d2127; --muted:#5f6670; --line:#e3e6ea; --soft:#f4f6f9; --accent:#3451b2; --bg:#f7f8fa; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 28px; }
header.top { background: #1f2430; color: #f3f4f6; padding: 30px 0 24px; }
header.top h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; letter-spacing: -0.01em; }
header.top .sub { color: #b8bfcc; font-size: 14px; }
header.top code { color: #e8ecf3; background: rgba(255,255,255,.08); padding: 1px 6px; border-radius: 4px; }
nav.toc { position: sticky; top: 0; z-index: 10; background: rgba(255,255,255,.96);
  border-bottom: 1px solid var(--line); backdrop-filter: blur(4px); }
nav.toc .wrap { display: flex; flex-wrap: wrap; gap: 4px 18px; padding-top: 9px; padding-bottom: 9px; }
nav.toc a { color: var(--muted); text-decoration: none; font-size: 13.5px; font-weight: 500; }
nav.toc a:hover { color: var(--accent); }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; margin: 22px 0;
  padding: 22px 28px 18px; scroll-margin-top: 52px; }
section h2 { margin: 0 0 2px; font-size: 20px; font-weight: 650; }
section h3 { margin: 20px 0 6px; font-size: 15.5px; font-weight: 620; }
section h4 { margin: 12px 0 6px; font-size: 13.5px; color: var(--muted); font-weight: 600; }
.lead { color: var(--muted); margin: 0 0 10px; }
.method { background: var(--soft); border-left: 3px solid #8a94a6; border-radius: 0 6px 6px 0;
  padding: 9px 14px; margin: 10px 0 14px; font-size: 13.5px; color: #3b4048; }
.method .tag { font-weight: 650; color: var(--ink); margin-right: 6px; }
.skipped { color: var(--muted); font-size: 13.5px; }
figure.fig { margin: 16px 0 8px; }
figure.fig svg { display: block; width: 100%; height: auto; max-width: 100%; }
figure.fig.narrow svg { max-width: 760px; }
figure.fig figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
.scroll { overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; margin: 8px 0; }
table.data th, table.data td { padding: 5px 11px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
table.data th { font-weight: 600; color: #3b4048; background: var(--soft); }
table.data th:first-child, table.data td:first-child { text-align: left; }
table.data.kv th { text-align: left; background: none; color: var(--muted); font-weight: 500; }
table.data.kv td { text-align: left; white-space: normal; }
table.data tr.base td { color: var(--muted); font-style: italic; }
table.data td .sub { display: block; color: var(--muted); font-size: 11.5px; }
table.data td.tokens { text-align: left; white-space: normal; font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: 12px 0 6px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .v { font-size: 21px; font-weight: 650; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.card .k { font-size: 11.5px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
details { margin: 10px 0; } details summary { cursor: pointer; color: var(--accent); font-size: 13.5px; }
.tv-legend { margin: 6px 0 12px; line-height: 2; }
.tv-legend .chip { display: inline-block; min-width: 24px; margin: 0 3px 0 0; padding: 0 4px; border-radius: 3px;
  text-align: center; font: 11.5px/1.6 ui-monospace, Menlo, Consolas, monospace; color: var(--ink); }
.tv-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 12px; margin-bottom: 14px; }
.tv-block { border: 1px solid var(--line); border-radius: 6px; overflow: hidden; }
.tv-block .hd { background: var(--soft); padding: 4px 10px; font-size: 12px; color: var(--muted); font-weight: 600; }
.tv-text { margin: 0; padding: 8px 10px; max-height: 340px; overflow: auto; white-space: pre-wrap; word-break: break-word;
  font: 12.5px/1.75 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.tok { border-radius: 2px; padding: 1px 0; }
.tok:hover { outline: 1.5px solid var(--ink); }
.tok.nl::before { content: "\\21B5"; opacity: .4; }
footer { color: var(--muted); font-size: 12.5px; padding: 10px 0 40px; }
@media print { nav.toc { display: none; } section { break-inside: avoid-page; border: none; } }
"""


@dataclass
class Section:
    """One block of the report: its anchor, title, a method note (HTML) and its body (HTML)."""

    id: str
    title: str
    method: str
    body: str


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100.0 * float(value):.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    row_classes: Sequence[str] | None = None,
    header_html: str | None = None,
) -> str:
    """An HTML table; cells are HTML already (escape data before passing it)."""
    head = header_html or "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f'<div class="scroll"><table class="data"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'


def kv_table(items: Sequence[tuple[str, object]]) -> str:
    """A two-column table of facts (names and values are escaped here)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<div class="scroll"><table class="data kv"><tbody>{rows}</tbody></table></div>'


def figure(svg: str, caption: str, *, narrow: bool = False) -> str:
    cls = "fig narrow" if narrow else "fig"
    return f'<figure class="{cls}">{svg}<figcaption>{caption}</figcaption></figure>'


def method(text: str) -> str:
    return f'<div class="method"><span class="tag">Method.</span>{text}</div>'


def cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{v}</div></div>' for k, v in items)
        + "</div>"
    )


def page(title: str, subtitle: str, sections: Sequence[Section], footer: str) -> str:
    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{method(s.method) if s.method else ""}{s.body}</section>'
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><div class="wrap"><h1>{esc(title)}</h1><div class="sub">{subtitle}</div></div></header>'
        f'<nav class="toc"><div class="wrap">{nav}</div></nav>'
        f'<main class="wrap">{body}</main><footer class="wrap">{footer}</footer></body></html>\n'
    )
