"""The inputs of a report, read and checked: `build_report(trace, out, analysis=..., cache=...)`.

`routelens report` is a thin layer over `build_report`; a Python user gets the same refusals (a
file that is not JSON, a result of another trace's shape, a locked page) in the same one-line
messages, which name the command's flags and the command that writes each file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from routelens.errors import RoutelensError
from routelens.store import meta_num_experts


def parse_layers(text: str | None) -> list[int] | None:
    """`"0,15,31"` -> [0, 15, 31]; None or "" -> None (the default layers)."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RoutelensError(
            f"--layers {text!r} is not a comma-separated list of layer indices; write e.g. --layers 0,15,31."
        ) from None


# The named inputs: flag -> (the result's key, the command that writes the file).
RESULTS = {
    "--cache": ("cache", "routelens simulate cache TRACE --json {path}"),
    "--balance": ("balance", "routelens simulate balance TRACE --json {path}"),
    "--distinct": ("distinct", "routelens simulate distinct TRACE --json {path}"),
}


def read_json_object(
    path: Path,
    flag: str = "--json",
    writer: str = "routelens analyze TRACE --json {path}",
    what: str = "an analysis object",
) -> dict:
    """The JSON object in `path`, or a one-line error naming `flag` and the command that writes it."""
    how = writer.format(path=path)
    if not path.is_file():
        raise RoutelensError(f"{flag} {path}: no such file; write it with `{how}`.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RoutelensError(f"{flag} {path} is not valid JSON ({exc}); write it again with `{how}`.") from None
    if not isinstance(payload, dict):
        raise RoutelensError(
            f"{flag} {path} holds a {type(payload).__name__}, not {what}; pass the file `{how}` wrote."
        )
    return payload


def load_analyses(paths: list[Path], trace=None) -> dict:
    """Merge the JSON objects of `paths` (later files win on a shared key): the old `--json` spelling.
    With `trace`, each file is checked as its named flag would check it: an analysis against the
    trace's shape, a simulator's result against its `*_meta`."""
    from routelens.report import check_analysis

    merged: dict = {}
    for path in paths:
        payload = read_json_object(path)
        if trace is not None:
            try:
                check_analysis(trace, payload)
            except RoutelensError as exc:
                raise RoutelensError(f"--json {path}: {exc}") from None
            for key, _ in RESULTS.values():
                check_result_meta(payload, key, path, "--json", trace)
        merged.update(payload)
    return merged


def check_result_meta(payload: dict, key: str, path: Path, flag: str, trace) -> None:
    """Refuse a simulator's result whose `{key}_meta` names another trace's tokens, experts or top-k."""
    writer = next(w for k, w in RESULTS.values() if k == key)
    meta = payload.get(f"{key}_meta") or {}
    mine = {"tokens": trace.num_tokens, "num_experts": trace.num_experts, "top_k": trace.top_k}
    for name, value in mine.items():
        if not (isinstance(meta, dict) and name in meta):
            continue
        theirs = meta_num_experts(meta, trace) if name == "num_experts" else meta[name]
        if theirs != value:
            raise RoutelensError(
                f"{flag} {path} was computed with {name}={theirs} but the trace at {trace.path} has "
                f"{name}={value}; simulate this trace (`{writer.format(path=path)}`)."
            )


def load_result(path: Path, flag: str, trace) -> dict:
    """The keys of one simulator's result (`cache`, `cache_*`; `balance`, `balance_*`; `distinct`,
    `distinct_*`) from `path`, refused when the file holds no such result or was computed on a trace
    of another shape (for `distinct`, keyed by layer, also of other layers).

    Only the simulator's own keys are taken, so the file of `routelens simulate all` can be passed
    to both --cache and --balance, and no input overwrites another's keys."""
    key, writer = RESULTS[flag]
    payload = read_json_object(path, flag, writer, what=f"a `{key}` result")
    if not isinstance(payload.get(key), dict):
        raise RoutelensError(
            f"{flag} {path} holds no `{key}` result; pass the file `{writer.format(path=path)}` wrote."
        )
    check_result_meta(payload, key, path, flag, trace)
    if key == "distinct":  # keyed by layer: another model's layers would fill the table with rows of no layer here
        layers, mine = list(payload[key]), [str(x) for x in trace.layers]
        if not set(layers) <= set(mine):
            raise RoutelensError(
                f"{flag} {path} has layers {','.join(layers)} but the trace at {trace.path} has layers "
                f"{','.join(mine)}; simulate this trace (`{writer.format(path=path)}`)."
            )
    return {k: v for k, v in payload.items() if k == key or k.startswith(f"{key}_")}


def load_comparison(path: Path, trace) -> dict:
    """The result of `routelens compare` in `path`, refused when it holds none or its layers are not the trace's."""
    writer = "routelens compare A B --json {path}"
    payload = read_json_object(path, "--compare", writer, what="a comparison")
    if not isinstance(payload.get("agreement"), dict):
        raise RoutelensError(
            f"--compare {path} holds no `agreement`; pass the file `{writer.format(path=path)}` wrote."
        )
    layers = (payload.get("meta") or {}).get("layers")
    if layers is not None and [str(x) for x in layers] != [str(x) for x in trace.layers]:
        raise RoutelensError(
            f"--compare {path} compares layers {layers} but the trace at {trace.path} has {trace.layers}; "
            "pass the comparison of this trace."
        )
    return payload


def load_replay(path: Path, trace) -> dict:
    """The report of `routelens replay` in `path`, refused when it holds none or its layers are not the trace's."""
    writer = "routelens replay MODEL --trace TRACE --out {path}"
    payload = read_json_object(path, "--replay", writer, what="a replay report")
    shares = payload.get("routing_differs")
    if not isinstance(shares, dict) or not shares or not isinstance(payload.get("any_layer_differs"), dict):
        raise RoutelensError(
            f"--replay {path} holds no `routing_differs`; pass the file `{writer.format(path=path)}` wrote."
        )
    layers = list(next(iter(shares.values())) or {})
    if layers != [str(x) for x in trace.layers]:
        raise RoutelensError(
            f"--replay {path} covers layers {layers} but the trace at {trace.path} has {trace.layers}; "
            "pass the replay report of this model's trace."
        )
    return payload


def build_report(
    trace: str | os.PathLike,
    out: str | os.PathLike = "report.html",
    *,
    analysis: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    balance: str | os.PathLike | None = None,
    distinct: str | os.PathLike | None = None,
    compare: str | os.PathLike | None = None,
    importance: str | os.PathLike | None = None,
    replay: str | os.PathLike | None = None,
    json_paths: list[str | os.PathLike] | None = None,
    layers: str | list[int] | None = None,
    pos: bool = False,
    figures: str | os.PathLike | None = None,
    figure_formats: str | Sequence[str] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of the trace directory `trace` to `out` from the saved results named (each
    file as `routelens report`'s flag of that name reads it), computing the analysis when none holds
    a distribution; returns the page's path. `layers` is a list or `"0,15,31"`; `figure_formats` as
    `write_report` takes it; `say` receives the one status line (default: `routelens.progress.status`)."""
    from contextlib import ExitStack

    from routelens.lock import output_lock
    from routelens.report.build import check_analysis, write_report_unlocked
    from routelens.report.figures_io import figure_formats as figure_formats_of
    from routelens.store import open_trace

    if say is None:
        from routelens.progress import status

        def say(message: str) -> None:
            status(message, show=progress)

    tr = open_trace(trace)
    tr.shard_rows()  # every shard's footer read: a damaged one is refused before any computing
    view_layers = layers if layers is None or isinstance(layers, list) else parse_layers(layers)
    formats = figure_formats_of(figure_formats)
    out = Path(out)
    figures = None if figures is None else Path(figures)
    # The page and its figure folder, locked before any computing: two reports into one would
    # replace each other's files, and the second should learn it at once, not after the analysis.
    with ExitStack() as held:
        held.enter_context(output_lock(out, what="report"))
        if figures is not None:
            held.enter_context(output_lock(figures, what="report"))
        merged = read_json_object(Path(analysis), "--analysis") if analysis is not None else {}
        merged.update(load_analyses([Path(p) for p in json_paths or []], tr))
        if merged:
            check_analysis(tr, merged)  # fail on a mismatched file before any computing
        for flag, path in (("--cache", cache), ("--balance", balance), ("--distinct", distinct)):
            if path is not None:
                merged.update(load_result(Path(path), flag, tr))
        if compare is not None:
            merged["compare"] = load_comparison(Path(compare), tr)
        if replay is not None:
            merged["replay"] = load_replay(Path(replay), tr)
        if importance is not None:
            from routelens.pruning.importance import check_importance

            payload = read_json_object(
                Path(importance), "--importance", "routelens importance TRACE --json {path}", "an importance result"
            )
            merged["importance"] = check_importance(payload, tr, f"--importance {importance}")
        if "distribution" not in merged:
            from routelens.analysis import analyze

            say("computing the analysis" + (" (with --pos)" if pos else "") + " ...")
            merged = {**analyze(tr, pos=pos, progress=progress), **merged}
        return write_report_unlocked(
            tr,
            merged,
            out,
            figures_dir=figures,
            token_view_layers=view_layers,
            figure_formats=formats,
            progress=progress,
        )
