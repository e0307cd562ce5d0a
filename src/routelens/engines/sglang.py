"""SGLang's routing: `/generate` responses saved as JSON lines, or its recorder's dump (recorder.py).

`--enable-return-routed-experts` with the request's `return_routed_experts: true` returns
`{text, output_ids, meta_info: {id, routed_experts, ...}}` and no prompt ids, so a saved line is
either the response with the request's `input_ids` added, or `{"request": {...}, "response": {...}}`
(a batch: `input_ids` a list of lists and `response` a list). `meta_info.routed_experts` is base64
of raw C-order int32 ids, flat, (P + O - 1 - S, num_hidden_layers, k) with S the request's
`routed_experts_start_len` (not echoed: read off the row count) and dense layers zero. A
`meta_info.routed_experts_dtype` (uint8/uint16/int32, proposed upstream) is honoured when present.
`routed_experts: null` is an aborted request: left out and counted.

routelens' own earlier lines (`prompt_token_ids` with `output_token_ids`/`output_ids`, and
`meta_info.routed_experts` or `routed_experts_b64` + `shape`, P + O or P + O - 1 rows, -1 in dense
layers) keep importing under their own rules.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from routelens.engines.model import EngineModel
from routelens.engines.records import (
    EngineDocument,
    ImportReport,
    b64_bytes,
    engine_document,
    json_lines,
    optional_text,
    raw_ids,
    routed_document,
    token_ids,
)
from routelens.errors import RoutelensError

WIRE_DTYPES = ("int32", "uint16", "uint8")


def read_sglang(
    path: str | os.PathLike, model: EngineModel, report: ImportReport, *, domain: str | None = None
) -> Iterator[EngineDocument]:
    """The requests of an SGLang JSON-lines file or recorder dump (`.pt`), in order."""
    if Path(path).suffix == ".pt":
        from routelens.engines.recorder import read_recorder

        yield from read_recorder([path], model, report, domain=domain)
        return
    for where, obj in json_lines(path):
        yield from sglang_documents(obj, where, model, report)


def sglang_documents(obj: dict, where: str, model: EngineModel, report: ImportReport) -> Iterator[EngineDocument]:
    """The documents of one saved SGLang line (module docstring), its form told by its keys."""
    domain = optional_text(obj, "domain", where)
    if "request" in obj and "response" in obj:
        request, response = obj["request"], obj["response"]
        if not isinstance(request, dict):
            raise RoutelensError(f"{where}: `request` is not an object; save the request you sent.")
        prompts = request.get("input_ids")
        if isinstance(response, list):
            if not (isinstance(prompts, list) and all(isinstance(p, list) for p in prompts)) or len(prompts) != len(
                response
            ):
                raise RoutelensError(
                    f"{where}: a batch response of {len(response)} needs request.input_ids as as many lists of ids."
                )
            pairs = list(zip(prompts, response))
        else:
            pairs = [(prompts, response)]
        for number, (prompt, resp) in enumerate(pairs):
            at = where if len(pairs) == 1 else f"{where} response {number}"
            if not isinstance(resp, dict):
                raise RoutelensError(f"{at}: the response is not an object; save what /generate returned.")
            doc = _response(model, at, prompt, resp, report)
            if doc is not None:
                doc.domain = domain
                yield doc
    elif (
        "input_ids" in obj
        and "prompt_token_ids" not in obj
        and "routed_experts_b64" not in obj
        and not _own_row_count(obj, model)
    ):
        doc = _response(model, where, obj["input_ids"], obj, report)
        if doc is not None:
            doc.domain = domain
            yield doc
    else:
        yield _own(obj, where, model, domain)


def _response(model: EngineModel, where: str, prompt, response: dict, report: ImportReport) -> EngineDocument | None:
    meta = response.get("meta_info")
    if not isinstance(meta, dict):
        raise RoutelensError(f"{where}: no meta_info object; save the /generate response unchanged.")
    if prompt is None:
        raise RoutelensError(
            f"{where}: no input_ids; SGLang's response has no prompt ids, so add the request's input_ids to the line."
        )
    prompt = token_ids(prompt, f"{where}: input_ids")
    output = token_ids(response.get("output_ids"), f"{where}: output_ids")
    if "routed_experts" not in meta:
        raise RoutelensError(
            f"{where}: meta_info has no routed_experts; serve with --enable-return-routed-experts and request "
            "return_routed_experts: true."
        )
    text = meta["routed_experts"]
    if text is None:
        report.aborted += 1
        return None
    data = b64_bytes(text, where, "meta_info.routed_experts")
    dtype = meta.get("routed_experts_dtype", "int32")
    if dtype not in WIRE_DTYPES:
        raise RoutelensError(
            f"{where}: meta_info.routed_experts_dtype {dtype!r} is not one of {', '.join(WIRE_DTYPES)}."
        )
    P, O = len(prompt), len(output)  # noqa: E741
    ids = raw_ids(data, [dtype], model, where, "meta_info.routed_experts", lambda r: 0 <= P + O - 1 - r < P)
    experts = model.engine_layers(ids, where, report.anomalies)
    return engine_document(model, where, prompt, output, experts, report, request_id=optional_text(meta, "id", where))


def responses(pairs: Iterable, model: EngineModel, report: ImportReport) -> Iterator[EngineDocument]:
    """Documents of what a Python user holds: (input_ids, response dict) pairs, or dicts of any line form."""
    for number, item in enumerate(pairs):
        where = f"response {number}"
        if isinstance(item, dict):
            yield from sglang_documents(item, where, model, report)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict):
            prompt = item[0].tolist() if hasattr(item[0], "tolist") else item[0]
            yield from sglang_documents({"request": {"input_ids": prompt}, "response": item[1]}, where, model, report)
        else:
            raise RoutelensError(
                f"{where} is a {type(item).__name__}; pass (input_ids, response) pairs or saved line dicts."
            )


# -- routelens' own earlier lines -------------------------------------------------------------------
def _own(obj: dict, where: str, model: EngineModel, domain) -> EngineDocument:
    meta = obj.get("meta_info") if isinstance(obj.get("meta_info"), dict) else {}
    prompt = token_ids(_first(obj, "prompt_token_ids", "input_ids"), f"{where}: prompt token ids")
    output = token_ids(_first(obj, "output_token_ids", "output_ids"), f"{where}: output token ids")
    routed = _decode_b64(meta, obj, where, model, len(prompt) + len(output))
    return routed_document(
        model,
        where,
        prompt.tolist(),
        output.tolist(),
        routed,
        domain=domain,
        request_id=optional_text(obj, "request_id", where) or optional_text(meta, "id", where),
    )


def _own_row_count(obj: dict, model: EngineModel) -> bool:
    """True for an `input_ids` line of routelens' own form: base64 int32 ids of P + O rows, which an
    engine never returns (its last sampled token is never run, so it has at most P + O - 1)."""
    meta = obj.get("meta_info")
    text = meta.get("routed_experts") if isinstance(meta, dict) else None
    prompt, output = obj.get("input_ids"), obj.get("output_ids")
    if not (isinstance(text, str) and isinstance(prompt, list) and isinstance(output, list)):
        return False
    if meta.get("routed_experts_dtype", "int32") != "int32":
        return False
    values = len(text.rstrip("=")) * 3 // 4 // 4  # decoded bytes / 4, without decoding
    rows = len(prompt) + len(output)
    return any(values == rows * layers * model.top_k for layers in {model.num_hidden_layers, len(model.moe_layers)})


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
