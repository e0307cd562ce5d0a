"""The report's figures, one module per analysis family, each function a matplotlib Figure.

Every function takes parts of the analysis dict (layers are strings of true layer indices, as in
the JSON) and returns a Figure built without pyplot's global state; `figures_io.FigureSink` turns
it into inline SVG and PNG/PDF copies. `base` holds the shared axes helpers and `grids` the
generic per-layer panels (heatmaps, histograms) that several families use. Nothing in the
analysis package draws: matplotlib is the report's dependency alone.
"""
