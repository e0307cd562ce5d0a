"""Per-layer expert loads of a trace in the files that expert-placement tools read.

    sglang: {"logical_count": [[...], ...]}  layers x E assignment counts, for SGLang's
            `--init-expert-location FILE` (it computes an EPLB placement from the counts)
    eplb:   weight[layers][E] as a JSON list of lists or a `.npy` array, the `weight` argument of
            DeepSeek EPLB's `rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus)`

A count is the number of (token, choice) assignments to the expert over the trace (every one of
the k choices counts once). SGLang sizes its layer axis by all decoder layers (dense ones included),
so the sglang file has one row per decoder layer by default, zero in dense layers; EPLB is given
the MoE layers. `layers` chooses either for both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from routelens.config import build_config, choice, setting
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace


class LoadFormat(StrEnum):
    SGLANG = "sglang"  # {"logical_count": layers x E}
    EPLB = "eplb"  # weight[layers][E]: .json list of lists or .npy


class LayerAxis(StrEnum):
    MOE = "moe"  # one row per recorded MoE layer
    DECODER = "decoder"  # one row per decoder layer; dense layers are rows of zeros


@dataclass
class ExportConfig:
    format: LoadFormat = setting(
        LoadFormat.SGLANG,
        'sglang: {"logical_count": ...} for --init-expert-location; eplb: DeepSeek EPLB\'s weight[layers][E].',
    )
    layers: LayerAxis | None = setting(
        None,
        "Rows: moe (MoE layers) or decoder (every decoder layer, dense ones zero).",
        shown_default="decoder for sglang, moe for eplb",
    )
    domain: str | None = setting(None, "Count only this domain's tokens (default: all).", shown_default="all")
    progress: bool = setting(True, "Show a progress bar.")

    def __post_init__(self):
        for name, kind in (("format", LoadFormat), ("layers", LayerAxis)):
            if getattr(self, name) is not None:
                setattr(self, name, choice(kind, getattr(self, name), f"--{name}"))

    @property
    def axis(self) -> LayerAxis:
        return self.layers or (LayerAxis.DECODER if self.format is LoadFormat.SGLANG else LayerAxis.MOE)


def expert_load(trace: Trace | str | os.PathLike, *, domain: str | None = None, progress: bool = False) -> np.ndarray:
    """(MoE layers, E) int64 assignment counts over the trace (or one domain), streamed."""
    from routelens.progress import progress_bar

    tr = trace if isinstance(trace, Trace) else open_trace(trace)
    E, L = tr.num_ids, len(tr.layers)
    if domain is not None and domain not in tr.domains:
        raise RoutelensError(
            f"--domain {domain!r} is not in the trace at {tr.path}; its domains are {', '.join(tr.domains)}."
        )
    code = None if domain is None else tr.domains.index(domain)
    counts = np.zeros((L, E), np.int64)
    offsets = (np.arange(L) * (E + 1))[None, :, None]  # one bin range per layer; bin E catches empty slots
    with progress_bar(not progress) as bar:
        task = bar.add_task("load", total=tr.num_tokens, status="")
        for chunk in tr.iter_chunks():
            experts = chunk.experts if code is None else chunk.experts[chunk.domain == code]
            ids = np.minimum(experts.astype(np.int64), E) + offsets  # (n, L, k)
            counts += np.bincount(ids.reshape(-1), minlength=L * (E + 1)).reshape(L, E + 1)[:, :E]
            bar.advance(task, len(chunk))
    return counts


def decoder_rows(trace: Trace, counts: np.ndarray) -> np.ndarray:
    """(MoE layers, E) -> (decoder layers, E), zero rows for dense layers."""
    hidden = int((trace.manifest.get("model") or {}).get("num_hidden_layers") or (max(trace.layers) + 1))
    out = np.zeros((max(hidden, max(trace.layers) + 1), counts.shape[1]), counts.dtype)
    out[trace.layers] = counts
    return out


def export_load(
    trace: Trace | str | os.PathLike, out: str | os.PathLike, config: ExportConfig | None = None, **overrides
) -> Path:
    """Write the trace's expert loads to `out` in `config.format`; returns the path."""
    from routelens.atomic import atomic_path, check_json_target, write_json

    config = build_config(ExportConfig, config, overrides)
    out = Path(out)
    suffix = out.suffix.lower()
    allowed = (".json",) if config.format is LoadFormat.SGLANG else (".json", ".npy")
    if suffix not in allowed:
        raise RoutelensError(
            f"--out {out}: a {config.format} file is written as {' or '.join(allowed)}; "
            f"name it e.g. {out.with_suffix(allowed[0]).name}."
        )
    if suffix == ".json":
        check_json_target(out, what="--out", example="load.json")  # before the pass over the trace
    tr = trace if isinstance(trace, Trace) else open_trace(trace)
    counts = expert_load(tr, domain=config.domain, progress=config.progress)
    if config.axis is LayerAxis.DECODER:
        counts = decoder_rows(tr, counts)
    if config.format is LoadFormat.SGLANG:
        return write_json(out, {"logical_count": counts.tolist()}, indent=None, newline=True, what="--out")
    if suffix == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, counts)
        return out
    return write_json(out, counts.tolist(), indent=None, newline=True, what="--out")
