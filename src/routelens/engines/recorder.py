"""SGLang's expert-distribution recorder (`per_token` mode) as requests, never guessed.

One file per rank, `expert_distribution_recorder_{time}_{rank}.pt` = `{records,
last_physical_to_logical_map [layers, physical]}`; a record per forward pass with `forward_pass_id,
rank, input_ids, positions, extend_seq_lens, forward_mode, topk_ids_of_layer` (int32 [layers,
tokens, 8], -1 padded, *physical* ids). Read with `torch.load(weights_only=True)` only.

The recorder names no request, so requests are rebuilt from what SGLang's scheduler keeps:

- ranks: a rank whose pass holds the same tokens (token id and position at every batch index) as
  a lower rank's pass of the same `forward_pass_id` saw the same batch (tensor parallel): counted
  once. A rank with a batch of its own (data parallel) is chained on its own.
- extend (prefill) passes are cut into requests by `extend_seq_lens`. A segment starting at
  position 0 is a new request; a segment at p > 0 continues the request that the previous
  extend pass ended with, when that request's next position is p and it has not decoded yet (a
  chunked prefill: SGLang puts the chunked request last in one pass and first in the next);
  any other segment at p > 0 (a prefix-cache hit) is a request of its own, starting at p.
  Finished prefills join the running batch at its end, in pass order.
- decode passes hold one token per running request in the running batch's order (new requests
  join at the end, finished ones leave, the order of the rest is kept). A pass is chained when
  exactly one order-keeping assignment of its tokens to running requests matches every token's
  position. Where none or several do (a request finished but equal-length ones leave it open which,
  a size or position that does not fit), no token is assigned: each becomes a request of its own,
  counted in `ImportReport.unchained_tokens`, and those become the running batch.
- mixed passes (chunked prefill with decode) are extend segments followed by the running batch's
  one-token segments, chained the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from routelens.engines.model import EngineModel
from routelens.engines.records import DECODE, PREFILL, EngineDocument, ImportReport, check_request, token_ids
from routelens.errors import RoutelensError

EXTEND_MODE, DECODE_MODE, MIXED_MODE, IDLE_MODE = 1, 2, 3, 4  # SGLang's ForwardMode values
FILE_NAME = re.compile(r"expert_distribution_recorder_[0-9.]+_([0-9]+)\.pt$")


@dataclass
class _Request:
    parts: list = field(default_factory=list)  # (token ids, positions, phases, experts)
    next: int = 0
    decoded: bool = False
    unchained: bool = False


@dataclass
class _Pass:
    where: str
    mode: int | None
    inputs: np.ndarray
    positions: np.ndarray
    lens: list[int] | None
    experts: np.ndarray  # (tokens, moe layers, k) logical
    fpid: int = 0


def recorder_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The .pt files named, a folder standing for its recorder files (every rank's)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("expert_distribution_recorder_*.pt"))
            if not found:
                raise RoutelensError(
                    f"{p} holds no expert_distribution_recorder_*.pt file; give the folder the recorder dumped to "
                    "(SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR)."
                )
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise RoutelensError(f"{p}: no such file or folder; give the recorder's .pt files or their folder.")
    return list(dict.fromkeys(out))


def load_recorder(path: str | os.PathLike) -> dict:
    """The recorder's dump, loaded without unpickling arbitrary objects."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # a foreign pickle protocol is refused below, not warned about
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RoutelensError(
            f"{path} cannot be read with torch.load(weights_only=True) ({first[:160]}); "
            "dump it with SGLang's expert-distribution recorder in per_token mode."
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise RoutelensError(
            f"{path} holds no `records` list; dump it with SGLang's recorder in per_token mode "
            "(--expert-distribution-recorder-mode per_token)."
        )
    return payload


def read_recorder(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    model: EngineModel,
    report: ImportReport,
    *,
    domain: str | None = None,
) -> Iterator[EngineDocument]:
    """Requests rebuilt from every rank's recorder files of one run (module docstring), in order of start."""
    files = recorder_files([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    streams: dict[int, dict[int, _Pass]] = {}  # rank -> forward pass id -> pass
    for file in files:
        payload = load_recorder(file)
        mapping = payload.get("last_physical_to_logical_map")
        mapping = None if mapping is None else np.asarray(mapping, dtype=np.int64)
        fallback = FILE_NAME.search(file.name)
        for number, record in enumerate(payload["records"]):
            where = f"{file} record {number}"
            one = _read_pass(record, where, mapping, model)
            if one is None:
                continue
            rank = _int(record.get("rank", int(fallback.group(1)) if fallback else 0), where, "rank")
            fpid = _int(record.get("forward_pass_id", number), where, "forward_pass_id")
            if fpid in streams.setdefault(rank, {}):
                raise RoutelensError(
                    f"{where}: forward_pass_id {fpid} of rank {rank} appears twice; give each rank's file once."
                )
            one.fpid = fpid
            streams[rank][fpid] = one
    # ranks that saw the same batch as a lower rank count once
    kept: dict[int, list[_Pass]] = {}
    for rank in sorted(streams):
        own = []
        for fpid in sorted(streams[rank]):
            one = streams[rank][fpid]
            if not any(_same_tokens(one, streams[r].get(fpid)) for r in kept):
                own.append(one)
        if own:
            kept[rank] = own
    done: list[tuple[int, int, _Request]] = []  # (first forward pass id, order, request), rank by rank
    for passes in kept.values():
        done.extend(_chain(passes, report))
    done.sort(key=lambda t: t[0])  # stable: within a pass, lower ranks first, then batch order
    for _, _, req in done:
        tok, pos, phase, experts = (np.concatenate(p) for p in zip(*req.parts))
        if not check_request(model, experts, report):
            continue
        yield EngineDocument(tok.astype(np.int32), pos.astype(np.int32), phase.astype(np.int32), experts, domain, None)


def _int(value, where: str, key: str) -> int:
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, int) or isinstance(value, bool):
        raise RoutelensError(f"{where}: `{key}` is a {type(value).__name__}, not an integer.")
    return value


def _same_tokens(a: _Pass, b: _Pass | None) -> bool:
    return (
        b is not None
        and len(a.inputs) == len(b.inputs)
        and np.array_equal(a.inputs, b.inputs)
        and np.array_equal(a.positions, b.positions)
    )


def _read_pass(record, where: str, mapping: np.ndarray | None, model: EngineModel) -> _Pass | None:
    if not isinstance(record, dict) or "topk_ids_of_layer" not in record:
        raise RoutelensError(f"{where} has no topk_ids_of_layer; dump with the recorder in per_token mode.")
    ids = np.asarray(record["topk_ids_of_layer"], dtype=np.int64)  # (layers, tokens, slots)
    if ids.ndim != 3:
        raise RoutelensError(f"{where}: topk_ids_of_layer has shape {ids.shape}, not (layers, tokens, slots).")
    n = ids.shape[1]
    mode = record.get("forward_mode")
    mode = None if mode is None else _int(mode, where, "forward_mode")
    if n == 0 or mode == IDLE_MODE:
        return None
    inputs = token_ids(_list(record.get("input_ids")), f"{where}: input_ids")
    positions = token_ids(_list(record.get("positions")), f"{where}: positions")
    if len(inputs) != n or len(positions) != n:
        raise RoutelensError(
            f"{where}: {len(inputs)} input_ids and {len(positions)} positions for {n} tokens; "
            "dump with the recorder in per_token mode."
        )
    lens = record.get("extend_seq_lens")
    lens = None if lens is None else [int(x) for x in _list(lens)]
    if lens is not None and (sum(lens) != n or (lens and min(lens) < 1)):
        raise RoutelensError(f"{where}: extend_seq_lens {lens} do not add up to its {n} tokens.")
    logical = model.to_moe_layers(_to_logical(ids, mapping, where).transpose(1, 0, 2), where)
    return _Pass(where, mode, inputs, positions, lens, logical)


def _list(value) -> list:
    if value is None:
        return []
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _chain(passes: list[_Pass], report: ImportReport) -> list[tuple[int, int, _Request]]:
    """One rank's passes -> its requests (first pass index, order within it, request)."""
    out: list[tuple[int, int, _Request]] = []
    running: list[_Request] = []
    chunked: _Request | None = None  # the request the last extend pass ended with, mid-prefill maybe

    def new(index: int, unchained: bool = False) -> _Request:
        req = _Request(unchained=unchained)
        out.append((passes[index].fpid, len(out), req))
        return req

    def add(req: _Request, one: _Pass, seg: slice, phase: int) -> None:
        req.parts.append((one.inputs[seg], one.positions[seg], np.full(seg.stop - seg.start, phase), one.experts[seg]))
        req.next = int(one.positions[seg.stop - 1]) + 1

    for index, one in enumerate(passes):
        n = len(one.inputs)
        if one.mode == DECODE_MODE or (one.lens is None and one.mode in (None, DECODE_MODE)):
            running = _decode(one, slice(0, n), running, index, new, add, report)
            continue
        if one.mode not in (EXTEND_MODE, MIXED_MODE, None) or one.lens is None:
            # a pass this reader does not model (speculative verify, draft extend): its own documents
            for i in range(n):
                add(new(index, True), one, slice(i, i + 1), DECODE)
            report.unchained_tokens += n
            report.unchained_passes += 1
            running = []
            chunked = None
            continue
        segments, at = [], 0
        for size in one.lens:
            segments.append(slice(at, at + size))
            at += size
        tail = 0  # a mixed pass ends with the running batch's one-token segments
        if one.mode == MIXED_MODE and running:
            tail = min(len(running), len(segments))
            while tail and any(s.stop - s.start != 1 for s in segments[len(segments) - tail :]):
                tail -= 1
        prefills = segments[: len(segments) - tail]
        joined: list[_Request] = []
        previous_chunked, chunked = chunked, None
        for number, seg in enumerate(prefills):
            start = int(one.positions[seg.start])
            if (
                number == 0
                and start > 0
                and previous_chunked is not None
                and not previous_chunked.decoded
                and previous_chunked.next == start
            ):
                req = previous_chunked
                if req in running:  # still prefilling: it rejoins at the end when this pass ends
                    running.remove(req)
            else:
                req = new(index)
            add(req, one, seg, PREFILL)
            joined.append(req)
        if prefills:
            chunked = joined[-1]
        if tail:
            first = segments[len(segments) - tail].start
            running = _decode(one, slice(first, n), running, index, new, add, report)
        running = running + joined
    return out


def _decode(one: _Pass, span: slice, running: list[_Request], index: int, new, add, report) -> list[_Request]:
    """Chain one token per running request (span of `one`) when exactly one order-keeping assignment
    fits every position; else each token is a request of its own. Returns the new running batch."""
    positions = one.positions[span].tolist()
    match = _unique_embedding(positions, [r.next for r in running])
    if match is None:
        fresh = []
        for i in range(span.start, span.stop):
            req = new(index, True)
            add(req, one, slice(i, i + 1), DECODE)
            req.decoded = True
            fresh.append(req)
        report.unchained_tokens += span.stop - span.start
        report.unchained_passes += 1
        return fresh
    kept = []
    for i, r in zip(range(span.start, span.stop), match):
        req = running[r]
        add(req, one, slice(i, i + 1), DECODE)
        req.decoded = True
        kept.append(req)
    return kept  # requests left out of the pass have finished


def _unique_embedding(tokens: list[int], nexts: list[int]) -> list[int] | None:
    """The one increasing assignment of `tokens` (positions) to `nexts` with equal values, or None
    when there is none or more than one (counts capped at 2)."""
    n, m = len(tokens), len(nexts)
    if n > m:
        return None
    if n == m:  # every running request decodes: the identity is the only order-keeping assignment
        return list(range(n)) if tokens == nexts else None
    # ways[i][o]: assignments of tokens[i:] into nexts[i + o:], o <= d = m - n requests skipped (banded)
    d = m - n
    ways = [[0] * (d + 2) for _ in range(n + 1)]
    for o in range(d + 1):
        ways[n][o] = 1
    for i in range(n - 1, -1, -1):
        row, below = ways[i], ways[i + 1]
        for o in range(d, -1, -1):
            row[o] = min(2, row[o + 1] + (below[o] if tokens[i] == nexts[i + o] else 0))
    if ways[0][0] != 1:
        return None
    out, o = [], 0
    for i in range(n):
        while not (tokens[i] == nexts[i + o] and ways[i + 1][o] >= 1):
            o += 1
        out.append(i + o)
    return out


def _to_logical(ids: np.ndarray, mapping: np.ndarray | None, where: str) -> np.ndarray:
    """Physical expert ids (layers, tokens, slots) -> logical ids through the recorder's map (-1 kept)."""
    if mapping is None:
        return ids
    if mapping.ndim != 2 or mapping.shape[0] != ids.shape[0]:
        raise RoutelensError(
            f"{where}: last_physical_to_logical_map has shape {tuple(mapping.shape)} for {ids.shape[0]} layers; "
            "pass the dump the recorder wrote."
        )
    if (ids >= mapping.shape[1]).any():
        raise RoutelensError(
            f"{where}: physical expert id {int(ids.max())} >= {mapping.shape[1]} physical experts in the map."
        )
    layer = np.arange(ids.shape[0])[:, None, None]
    return np.where(ids < 0, ids, mapping[layer, np.maximum(ids, 0)])
