"""vLLM's routed experts (`--enable-return-routed-experts`), one JSON object a line, told apart by keys:

- `/v1/completions` (request `return_token_ids: true`): `choices[i].prompt_token_ids`,
  `choices[i].token_ids`, `choices[i].routed_experts` = base64 of `.npy` bytes (np.save) of a
  (P + O - 1 - S, num_hidden_layers, k) integer array;
- `/v1/chat/completions`: the same, with `prompt_token_ids` at the response level;
- v0.21's split: response-level `prompt_routed_experts` (the prompt's rows) and per-choice
  `routed_experts` (the output's O - 1 rows), nested integer lists of the MoE layers only;
- a saved offline `RequestOutput` (`LLM.generate`): `{"request_id", "prompt_token_ids", "outputs":
  [{"index", "token_ids", "routed_experts"}]}`, the routing as nested lists (or the base64 string).

Every decoder layer is on the layer axis with dense layers left at zero (which reads as expert 0):
the model's config says which layers are MoE, never the values. The last sampled token is never
run, so it has no row; S (`routed_experts_prompt_start`) is not echoed and is read off the row
count. `routed_experts: null` is an aborted request: left out and counted. Each of `n > 1`
choices is its own document with the prompt's rows, as vLLM returns them, `request_id` `<id>/<index>`.

A base64 string is read as `.npy` when it starts with numpy's magic, else as raw C-order ids of
int32 or (uint8 if E + Z <= 256 else uint16) when exactly one of them fits the row count (the
element type differs between the vLLM versions read; docs/engine-formats.md).

routelens' own earlier JSON lines (`prompt_token_ids`, `output_token_ids`, `routed_experts` of
P + O or P + O - 1 rows, -1 in dense layers, optional `prompt_routed_experts`) keep importing
under their own rules (records.routed_document).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np

from routelens.engines.model import EngineModel
from routelens.engines.records import (
    NPY_MAGIC,
    EngineDocument,
    ImportReport,
    b64_bytes,
    engine_document,
    id_array,
    json_lines,
    npy_ids,
    optional_text,
    raw_ids,
    routed_document,
    token_ids,
)
from routelens.errors import RoutelensError


def read_vllm(path: str | os.PathLike, model: EngineModel, report: ImportReport) -> Iterator[EngineDocument]:
    """The requests of a vLLM JSON-lines file, in file order."""
    for where, obj in json_lines(path):
        yield from vllm_documents(obj, where, model, report)


def vllm_documents(obj: dict, where: str, model: EngineModel, report: ImportReport) -> Iterator[EngineDocument]:
    """The documents of one saved vLLM object (module docstring), its form told by its keys."""
    domain = optional_text(obj, "domain", where)
    if "choices" in obj:
        choices = _list_of_dicts(obj, "choices", where)
        rid = optional_text(obj, "id", where)
        split = obj.get("prompt_routed_experts")
        for number, choice in enumerate(choices):
            at = f"{where} choice {number}"
            index = choice.get("index", number)
            prompt = choice.get("prompt_token_ids")
            prompt = obj.get("prompt_token_ids") if prompt is None else prompt
            if prompt is None:
                raise RoutelensError(
                    f"{at}: no prompt_token_ids (per choice or in the response); request return_token_ids: true."
                )
            doc = _request(
                model, at, prompt, choice.get("token_ids"), choice.get("routed_experts"), report, split=split
            )
            if doc is not None:
                doc.domain = domain
                doc.request_id = None if rid is None else (f"{rid}/{index}" if len(choices) > 1 else rid)
                yield doc
    elif "outputs" in obj:
        rid = optional_text(obj, "request_id", where)
        outputs = _list_of_dicts(obj, "outputs", where)
        for number, out in enumerate(outputs):
            at = f"{where} output {number}"
            doc = _request(
                model, at, obj.get("prompt_token_ids"), out.get("token_ids"), out.get("routed_experts"), report
            )
            if doc is not None:
                doc.domain = domain
                index = out.get("index", number)
                doc.request_id = None if rid is None else (f"{rid}/{index}" if len(outputs) > 1 else rid)
                yield doc
    else:  # routelens' own earlier form
        yield _own(obj, where, model, domain, report)


def _own(obj: dict, where: str, model: EngineModel, domain, report: ImportReport) -> EngineDocument:
    return routed_document(
        model,
        where,
        obj.get("prompt_token_ids"),
        obj.get("output_token_ids"),
        obj.get("routed_experts"),
        prompt_routed=obj.get("prompt_routed_experts"),
        domain=domain,
        request_id=optional_text(obj, "request_id", where),
    )


def _list_of_dicts(obj: dict, key: str, where: str) -> list[dict]:
    value = obj.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(c, dict) for c in value):
        raise RoutelensError(f"{where}: `{key}` is not a non-empty list of objects; save the response unchanged.")
    return value


def _request(
    model: EngineModel, where: str, prompt, output, routed, report: ImportReport, *, split=None
) -> EngineDocument | None:
    prompt = token_ids(_plain(prompt), f"{where}: prompt token ids")
    output = token_ids(_plain(output), f"{where}: output token ids")
    if routed is None:  # aborted: the engine collected no routing
        report.aborted += 1
        return None
    P, O = len(prompt), len(output)  # noqa: E741

    def rows_ok(rows: int) -> bool:
        return 0 <= P + O - 1 - rows < P

    if split is not None:  # v0.21: the prompt's rows at the response level, the output's per choice
        head = model.engine_layers(id_array(_plain(split), where, "prompt_routed_experts"), where, report.anomalies)
        tail = model.engine_layers(_ids(routed, where, model, lambda r: r == max(O - 1, 0)), where, report.anomalies)
        if len(tail) != max(O - 1, 0):
            raise RoutelensError(
                f"{where}: routed_experts has {len(tail)} rows for {O} output tokens; vLLM's split form "
                "gives O - 1 (the last token is never run)."
            )
        experts = np.concatenate([head, tail])
    else:
        experts = model.engine_layers(_ids(routed, where, model, rows_ok), where, report.anomalies)
    return engine_document(model, where, prompt, output, experts, report)


def _ids(routed, where: str, model: EngineModel, rows_ok) -> np.ndarray:
    """routed_experts as given: an ndarray, nested lists, or a base64 string (.npy or raw bytes)."""
    if isinstance(routed, np.ndarray):
        if routed.dtype == object or not np.issubdtype(routed.dtype, np.integer):
            raise RoutelensError(f"{where}: routed_experts is a {routed.dtype} array, not integer expert ids.")
        return routed.astype(np.int64)
    if isinstance(routed, str):
        data = b64_bytes(routed, where, "routed_experts")
        if data.startswith(NPY_MAGIC):
            return npy_ids(data, where, "routed_experts")
        narrow = "uint8" if model.num_ids <= 256 else "uint16"
        return raw_ids(data, ["int32", narrow], model, where, "routed_experts", rows_ok)
    return id_array(_plain(routed), where, "routed_experts")


def _plain(value):
    """A tensor / array / tuple of ids -> a list; anything else unchanged (checked by the callers)."""
    if hasattr(value, "tolist") and not isinstance(value, (list, str)):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def request_outputs(outputs: Iterable, model: EngineModel, report: ImportReport) -> Iterator[EngineDocument]:
    """Documents of what a Python user holds: vLLM `RequestOutput` objects (duck-typed: attributes
    `request_id`, `prompt_token_ids`, `outputs[i].index/token_ids/routed_experts`) or dicts of any
    form above."""
    for number, item in enumerate(outputs):
        where = f"output {number}"
        if isinstance(item, dict):
            yield from vllm_documents(item, where, model, report)
            continue
        if not hasattr(item, "prompt_token_ids") or not hasattr(item, "outputs"):
            raise RoutelensError(
                f"{where} is a {type(item).__name__}, not a vLLM RequestOutput (no prompt_token_ids / outputs); "
                "pass what LLM.generate returned."
            )
        obj = {
            "request_id": getattr(item, "request_id", None),
            "prompt_token_ids": item.prompt_token_ids,
            "outputs": [
                {
                    "index": getattr(o, "index", i),
                    "token_ids": getattr(o, "token_ids", None),
                    "routed_experts": getattr(o, "routed_experts", None),
                }
                for i, o in enumerate(item.outputs or [])
            ],
        }
        yield from vllm_documents(obj, where, model, report)
