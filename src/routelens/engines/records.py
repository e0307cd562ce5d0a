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


# -- the engines' own forms (vLLM, SGLang): rows [S, P + O - 1), every decoder layer, dense ones zero --
ALL_ZERO_MIN_ROWS = 8  # top-1 models: rows a request needs before an all-zero MoE layer is an anomaly
ANOMALIES = ("repeated_expert", "id_out_of_range", "moe_layer_all_zero", "dense_layer_not_zero")


@dataclass
class ImportReport:
    """What an import left out or found suspicious, written to the manifest's `import` entry."""

    aborted: int = 0  # requests the engine returned no routing for (routed_experts null)
    left_out: int = 0  # requests left out for ids outside 0 .. E+Z-1 (counted in anomalies too)
    unchained_tokens: int = 0  # recorder tokens whose request could not be told (their own documents)
    unchained_passes: int = 0
    anomalies: dict[str, int] | None = None

    def __post_init__(self):
        self.anomalies = dict.fromkeys(ANOMALIES, 0) if self.anomalies is None else self.anomalies

    def to_json(self) -> dict:
        return {
            "aborted": self.aborted,
            "left_out": self.left_out,
            "unchained_tokens": self.unchained_tokens,
            "unchained_passes": self.unchained_passes,
            "anomalies": dict(self.anomalies),
        }


def check_request(model: EngineModel, experts: np.ndarray, report: ImportReport) -> bool:
    """Count one request's anomalies (experts: (rows, moe layers, k) int64); False when its ids
    fall outside 0 .. E+Z-1 (the request cannot be stored and is left out)."""
    if not len(experts):
        return True
    a = report.anomalies
    bad = int(((experts < 0) | (experts >= model.num_ids)).sum())
    a["id_out_of_range"] += bad
    zero = (experts == 0).all(axis=(0, 2))  # (moe layers,): a layer the capture never wrote
    if experts.shape[2] == 1 and len(experts) < ALL_ZERO_MIN_ROWS:
        zero[:] = False  # top-1: a short request may well send every token to expert 0
    a["moe_layer_all_zero"] += int(zero.sum())
    ordered = np.sort(experts[:, ~zero], axis=2)  # a never-written layer is counted once, above
    a["repeated_expert"] += int((ordered[:, :, 1:] == ordered[:, :, :-1]).any(axis=2).sum())
    if bad:
        report.left_out += 1
    return not bad


def engine_document(
    model: EngineModel,
    where: str,
    prompt: np.ndarray,
    output: np.ndarray,
    experts: np.ndarray,
    report: ImportReport,
    *,
    domain: str | None = None,
    request_id: str | None = None,
) -> EngineDocument | None:
    """One request's rows from (R, moe layers, k) engine routing: R = P + O - 1 - S for the request's
    start S in [0, P) (vLLM's routed_experts_prompt_start, SGLang's routed_experts_start_len; neither
    is echoed, so S is read off R). The last sampled token is never run, so it has no row. None when
    the request's ids are out of range (counted in `report`)."""
    P, O = len(prompt), len(output)  # noqa: E741 - prompt and output lengths, as in P + O - 1 rows
    R = len(experts)
    start = P + O - 1 - R
    if P == 0 or not 0 <= start < P:
        raise RoutelensError(
            f"{where}: {R} routing rows for {P} prompt + {O} output tokens; an engine returns "
            f"P + O - 1 - S = {max(P + O - 1 - (P - 1), 0)}..{max(P + O - 1, 0)} rows (S: the request's start), "
            "so save prompt_token_ids and the output's token_ids with its routed_experts."
        )
    if not check_request(model, experts, report):
        return None
    stop = P + O - 1
    positions = np.arange(start, stop, dtype=np.int32)
    tokens = np.concatenate([prompt, output])[start:stop].astype(np.int32)
    phase = np.where(positions < P, PREFILL, DECODE).astype(np.int32)
    return EngineDocument(tokens, positions, phase, experts, domain, request_id)


NPY_MAGIC = b"\x93NUMPY"


def npy_ids(data: bytes, where: str, key: str) -> np.ndarray:
    """`.npy` bytes (np.save's) -> an integer array, read without pickle: object arrays are refused."""
    import io

    try:
        ids = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RoutelensError(
            f"{where}: `{key}` is .npy bytes numpy cannot read without pickle ({first[:120]}); "
            "save the string the engine returned, unchanged."
        ) from None
    if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
        raise RoutelensError(
            f"{where}: `{key}` holds {getattr(ids, 'dtype', type(ids).__name__)} values, not integer expert ids; "
            "save the string the engine returned, unchanged."
        )
    return ids.astype(np.int64)


def b64_bytes(text, where: str, key: str) -> bytes:
    import base64
    import binascii

    if not isinstance(text, str):
        raise RoutelensError(f"{where}: `{key}` is a {type(text).__name__}, not a base64 string.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RoutelensError(
            f"{where}: `{key}` is not base64; save the string the engine returned, unchanged."
        ) from None


def raw_ids(data: bytes, dtypes: list[str], model: EngineModel, where: str, key: str, rows_ok) -> np.ndarray:
    """Raw C-order id bytes (no header) -> (rows, layers, k) int64. `dtypes` are the element types
    the engine may have used; exactly one (type, layer axis) may fit the request's row count
    (`rows_ok(rows)`), else the bytes are refused as ambiguous or misfit."""
    fits = []
    for dtype in dict.fromkeys(dtypes):
        size = np.dtype(dtype).itemsize
        if len(data) % size:
            continue
        count = len(data) // size
        for layers in dict.fromkeys((model.num_hidden_layers, len(model.moe_layers))):
            width = layers * model.top_k
            if count % width == 0 and rows_ok(count // width):
                fits.append((dtype, layers))
    if len(fits) != 1:
        why = "fit no" if not fits else f"fit {len(fits)} ({', '.join(f'{d} x {n} layers' for d, n in fits)})"
        raise RoutelensError(
            f"{where}: the {len(data)} bytes of `{key}` {why} reading of {' or '.join(dict.fromkeys(dtypes))} ids "
            f"as (rows, {model.num_hidden_layers} or {len(model.moe_layers)} layers, k={model.top_k}) for this "
            "request; import with the model the engine served."
        )
    dtype, layers = fits[0]
    flat = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    return flat.reshape(-1, layers, model.top_k).astype(np.int64)
