"""The report's sections, one module per analysis family; `build.SECTIONS` puts them in page order.

Each module has a builder `*_section(ctx) -> Section | None` that reads its keys of the analysis
dict from the `ReportContext` (`context.py`), draws its figures with the matching module of
`routelens.report.figures`, and returns None when the analysis lacks those keys. Statistics are
never recomputed here: where the report needs one the analysis left out (a Jensen-Shannon
divergence, the random locality baseline), it calls the analysis' own function.
"""
