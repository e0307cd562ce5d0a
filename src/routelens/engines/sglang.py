"""SGLang's routing, from either of its two outputs:

- `--enable-return-routed-experts` responses saved as JSON lines, one request a line:
  `{"prompt_token_ids": [...], "output_token_ids": [...], "meta_info": {"routed_experts": B64}}`,
  where B64 is base64 of int32 ids (tokens, layers, k) flattened, covering the prompt's tokens then
  the output's. The shape is read from `shape` beside `routed_experts_b64` (in `meta_info` or at
  the top level) when given, else inferred from the token counts and the model. `output_ids` and
  `input_ids` are read as SGLang spells them too.
- the per-token dump of its expert-distribution recorder (`.pt`, `per_token` mode): `records`, one
  per forward pass, each with `input_ids`, `positions`, `extend_seq_lens`, `forward_mode` and
  `topk_ids_of_layer` (layers, tokens, slots) of *physical* expert ids padded with -1, and
  `last_physical_to_logical_map` (layers, physical experts). Read with `torch.load(weights_only=True)`
  only: a file that needs arbitrary unpickling is refused.

The recorder does not name requests, so requests are rebuilt from positions: an extend segment at
position 0 starts a request, a segment or decode token at position p continues the earliest
running request whose next position is p, and a request that a decode pass leaves out has
finished (exact for one request at a time and for a running batch whose order is kept, as
SGLang keeps it; requests retracted and resumed later would be split).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from routelens.engines.model import EngineModel
from routelens.engines.records import (
    DECODE,
    PREFILL,
    EngineDocument,
    json_lines,
    optional_text,
    routed_document,
    token_ids,
)
from routelens.errors import RoutelensError

DECODE_MODE, MIXED_MODE = 2, 3  # SGLang's ForwardMode values of a decode pass and a mixed (chunked) pass


def read_sglang(path: str | os.PathLike, model: EngineModel, *, domain: str | None = None) -> Iterator[EngineDocument]:
    """The requests of an SGLang JSON-lines file or recorder dump (`.pt`), in order."""
    if Path(path).suffix == ".pt":
        yield from read_recorder(path, model, domain=domain)
        return
    for where, obj in json_lines(path):
        meta = obj.get("meta_info") if isinstance(obj.get("meta_info"), dict) else {}
        prompt = token_ids(_first(obj, "prompt_token_ids", "input_ids"), f"{where}: prompt token ids")
        output = token_ids(_first(obj, "output_token_ids", "output_ids"), f"{where}: output token ids")
        routed = _decode_b64(meta, obj, where, model, len(prompt) + len(output))
        yield routed_document(
            model,
            where,
            prompt.tolist(),
            output.tolist(),
            routed,
            domain=optional_text(obj, "domain", where) or domain,
            request_id=optional_text(obj, "request_id", where) or optional_text(meta, "id", where),
        )


def _first(obj: dict, *keys: str):
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


def _decode_b64(meta: dict, obj: dict, where: str, model: EngineModel, tokens: int) -> np.ndarray:
    """The base64 int32 ids of a response -> (rows, layers, k), with its shape given or inferred."""
    holder = next((h for h in (meta, obj) if h.get("routed_experts_b64") is not None), None)
    text = holder["routed_experts_b64"] if holder else meta.get("routed_experts", obj.get("routed_experts"))
    if not isinstance(text, str):
        raise RoutelensError(
            f"{where}: no base64 routed experts (meta_info.routed_experts or routed_experts_b64); "
            "serve with --enable-return-routed-experts and request return_routed_experts."
        )
    try:
        flat = np.frombuffer(base64.b64decode(text, validate=True), dtype="<i4")
    except (binascii.Error, ValueError):
        raise RoutelensError(
            f"{where}: routed experts are not base64 of int32 values; save meta_info.routed_experts as SGLang returns it."
        ) from None
    shape = holder.get("shape") if holder else None
    if shape is not None:
        if (
            not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s >= 0 for s in shape))
            or int(np.prod(shape)) != flat.size
        ):
            raise RoutelensError(
                f"{where}: shape {shape} does not fit {flat.size} decoded ids; give [tokens, layers, k]."
            )
        return flat.reshape(shape).astype(np.int64)
    for layers in dict.fromkeys((len(model.moe_layers), model.num_hidden_layers)):
        for rows in (tokens, tokens - 1):
            if rows > 0 and flat.size == rows * layers * model.top_k:
                return flat.reshape(rows, layers, model.top_k).astype(np.int64)
    raise RoutelensError(
        f"{where}: {flat.size} decoded ids fit no (tokens, layers, k) of {tokens} tokens and {model.name} "
        f"(k={model.top_k}; {len(model.moe_layers)} MoE or {model.num_hidden_layers} layers); "
        "give `shape` beside routed_experts_b64, or import with the model the engine served."
    )


def load_recorder(path: str | os.PathLike) -> dict:
    """The recorder's dump, loaded without unpickling arbitrary objects."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # a foreign pickle protocol is refused below, not warned about
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
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
    path: str | os.PathLike, model: EngineModel, *, domain: str | None = None
) -> Iterator[EngineDocument]:
    """Requests rebuilt from the recorder's forward passes (module docstring), in order of their start."""
    payload = load_recorder(path)
    mapping = payload.get("last_physical_to_logical_map")
    mapping = None if mapping is None else np.asarray(mapping, dtype=np.int64)  # (layers, physical)
    docs: list[dict] = []  # each: parts of token ids, positions, phases, experts; `next` position
    for number, record in enumerate(payload["records"]):
        where = f"{path} record {number}"
        if not isinstance(record, dict) or "topk_ids_of_layer" not in record:
            raise RoutelensError(f"{where} has no topk_ids_of_layer; dump with the recorder in per_token mode.")
        ids = np.asarray(record["topk_ids_of_layer"], dtype=np.int64)  # (layers, tokens, slots)
        if ids.ndim != 3:
            raise RoutelensError(f"{where}: topk_ids_of_layer has shape {ids.shape}, not (layers, tokens, slots).")
        n = ids.shape[1]
        if n == 0:
            continue
        inputs = token_ids(list(record.get("input_ids") or []), f"{where}: input_ids")
        positions = token_ids(list(record.get("positions") or []), f"{where}: positions")
        if len(inputs) != n or len(positions) != n:
            raise RoutelensError(
                f"{where}: {len(inputs)} input_ids and {len(positions)} positions for {n} tokens; "
                "dump with the recorder in per_token mode."
            )
        logical = model.to_moe_layers(_to_logical(ids, mapping, where).transpose(1, 0, 2), where)  # (tokens, L, k)
        mode = record.get("forward_mode")
        lens = [1] * n if mode == DECODE_MODE else list(record.get("extend_seq_lens") or [n])
        if sum(lens) != n or min(lens) < 1:
            raise RoutelensError(f"{where}: extend_seq_lens {lens} do not add up to its {n} tokens.")
        at, touched = 0, set()
        for size in lens:
            seg = slice(at, at + size)
            at += size
            start = int(positions[seg][0])
            doc = next(
                (d for d in docs if d["open"] and d["next"] == start and start > 0 and id(d) not in touched), None
            )
            decode = mode == DECODE_MODE or (mode == MIXED_MODE and size == 1 and doc is not None)
            if doc is None:
                doc = {"parts": [], "next": start, "open": True}
                docs.append(doc)
            touched.add(id(doc))
            doc["parts"].append(
                (inputs[seg], positions[seg], np.full(size, DECODE if decode else PREFILL), logical[seg])
            )
            doc["next"] = int(positions[seg][-1]) + 1
        if mode == DECODE_MODE:  # a running request that a decode pass leaves out has finished
            for doc in docs:
                doc["open"] = doc["open"] and id(doc) in touched
    for doc in docs:
        tok, pos, phase, experts = (np.concatenate(p) for p in zip(*doc["parts"]))
        yield EngineDocument(tok.astype(np.int32), pos.astype(np.int32), phase.astype(np.int32), experts, domain)


def _to_logical(ids: np.ndarray, mapping: np.ndarray | None, where: str) -> np.ndarray:
    """Physical expert ids (layers, tokens, slots) -> logical ids through the recorder's map (-1 kept)."""
    if mapping is None:
        return ids
    if mapping.ndim != 2 or mapping.shape[0] != ids.shape[0]:
        raise RoutelensError(
            f"{where}: last_physical_to_logical_map has shape {mapping.shape} for {ids.shape[0]} layers; "
            "pass the dump the recorder wrote."
        )
    if (ids >= mapping.shape[1]).any():
        raise RoutelensError(
            f"{where}: physical expert id {int(ids.max())} >= {mapping.shape[1]} physical experts in the map."
        )
    layer = np.arange(ids.shape[0])[:, None, None]
    return np.where(ids < 0, ids, mapping[layer, np.maximum(ids, 0)])
