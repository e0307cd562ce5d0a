"""One served request as trace rows, and the JSON-lines reading that every engine's export shares.

An engine reports, per request, the prompt's token ids, the generated ones, and the experts each
token was routed to. Every token that went through the model has a row: the prompt's rows get
phase `prefill`, the generated ones `decode`. The last generated token never goes through the model
(nothing is decoded after it), so an engine may report one routing row fewer than tokens: that
token then has no row. Every malformed input is refused in one line naming the file's line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routelens.engines.model import EngineModel
from routelens.errors import RoutelensError

PREFILL, DECODE = 0, 1  # codes into routelens.store.schema.PHASES


@dataclass
class EngineDocument:
    """One request's rows: (n,) token ids, positions and phases, (n, moe layers, k) experts."""

    token_id: np.ndarray
    position: np.ndarray
    phase: np.ndarray
    experts: np.ndarray
    domain: str | None = None
    request_id: str | None = None

    def __len__(self) -> int:
        return len(self.token_id)


def routed_document(
    model: EngineModel,
    where: str,
    prompt,
    output,
    routed,
    *,
    prompt_routed=None,
    domain: str | None = None,
    request_id: str | None = None,
) -> EngineDocument:
    """The rows of one request: `routed` covers the prompt then the output tokens, or only the output
    tokens when `prompt_routed` gives the prompt's (vLLM's split)."""
    prompt, output = token_ids(prompt, f"{where}: prompt token ids"), token_ids(output, f"{where}: output token ids")
    P, O = len(prompt), len(output)  # noqa: E741 - prompt and output lengths, as in P + O - 1 rows
    if prompt_routed is not None:
        head = model.to_moe_layers(id_array(prompt_routed, where, "prompt_routed_experts"), where)
        tail = model.to_moe_layers(id_array(routed, where, "routed_experts"), where) if routed is not None else head[:0]
        if len(head) != P:
            raise RoutelensError(
                f"{where}: prompt_routed_experts has {len(head)} rows for {P} prompt tokens; "
                "give one row per prompt token."
            )
        if len(tail) not in {O, max(O - 1, 0)}:
            raise RoutelensError(
                f"{where}: routed_experts has {len(tail)} rows for {O} output tokens; give one row "
                "per output token (or one fewer: the last token is never run)."
            )
        experts = np.concatenate([head, tail])
    else:
        experts = model.to_moe_layers(id_array(routed, where, "routed_experts"), where)
        if len(experts) not in {P + O, P + O - 1} or len(experts) < P:
            raise RoutelensError(
                f"{where}: routed experts have {len(experts)} rows for {P} prompt + {O} output tokens; "
                "give one row per token (or one fewer: the last token is never run)."
            )
    n = len(experts)
    phase = np.where(np.arange(n) < P, PREFILL, DECODE).astype(np.int32)
    tokens = np.concatenate([prompt, output])[:n]
    return EngineDocument(tokens.astype(np.int32), np.arange(n, dtype=np.int32), phase, experts, domain, request_id)


def token_ids(value, what: str) -> np.ndarray:
    """A JSON list of token ids -> (n,) int64, refused when it is anything else."""
    if value is None:
        return np.zeros(0, np.int64)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise RoutelensError(f"{what} are not a list of non-negative integers; give e.g. [1, 415, 2936].")
    return np.asarray(value, dtype=np.int64).reshape(-1)


def id_array(value, where: str, key: str) -> np.ndarray:
    """Nested JSON lists (tokens, layers, k) of integers -> int64 array, refused when ragged."""
    if not isinstance(value, (list, np.ndarray)):
        raise RoutelensError(
            f"{where}: `{key}` is missing or not a list; give (tokens, layers, k) nested lists of expert ids."
        )
    try:
        ids = np.asarray(value)
    except ValueError:
        ids = None
    if ids is None or ids.dtype == object or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise RoutelensError(
            f"{where}: `{key}` is ragged or not integers; give (tokens, layers, k) nested lists of expert ids."
        )
    if ids.size == 0:
        ids = ids.reshape(0, 0, 0) if ids.ndim != 3 else ids
    return ids.astype(np.int64)


def optional_text(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RoutelensError(f"{where}: `{key}` is a {type(value).__name__}; give a string.")
    return str(value)


def json_lines(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """("FILE line N", object) for every non-blank line of a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise RoutelensError(f"{path}: no such file; give the JSON-lines file the engine's requests were saved to.")
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path} line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RoutelensError(f"{where} is not UTF-8 (byte {exc.start}); save the file as UTF-8.") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RoutelensError(
                    f"{where} is not valid JSON ({exc.msg}, column {exc.colno}); write one JSON object per line."
                ) from None
            if not isinstance(obj, dict):
                raise RoutelensError(
                    f"{where} holds a {type(obj).__name__}, not a JSON object; write one request object per line."
                )
            yield where, obj
