"""Writers of what vLLM and SGLang return for the requests of a real routelens trace, encoded the way
each engine's code encodes it (docs/engine-formats.md): vLLM np.save to bytes + base64, SGLang raw
int32 C-order bytes + base64, the recorder's dict through torch.save."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Req:
    """One served request cut from a traced document: prompt, output, (T, moe layers, k) experts."""

    prompt: list[int]
    output: list[int]
    experts: np.ndarray
    start: int = 0  # S: the first row the engine returns (routed_experts_prompt_start / _start_len)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


def requests_of(docs: list[dict], *, prompt: int | None = None, length: int | None = None) -> list[Req]:
    out = []
    for d in docs:
        T = min(len(d["tokens"]), length or len(d["tokens"]))
        P = prompt or max(1, T // 2)
        out.append(Req(d["tokens"][:P], d["tokens"][P:T], d["experts"][:T].astype(np.int64)))
    return out


def full_layers(experts: np.ndarray, moe_layers: list[int], hidden: int, fill: int = 0) -> np.ndarray:
    """(rows, moe layers, k) -> (rows, decoder layers, k), dense layers `fill` (engines: zero)."""
    out = np.full((len(experts), hidden, experts.shape[2]), fill, experts.dtype)
    out[:, moe_layers] = experts
    return out


def engine_rows(req: Req) -> np.ndarray:
    """The rows an engine returns: tokens S .. P + O - 2 (the last sampled token is never run)."""
    return req.experts[req.start : len(req.tokens) - 1]


def npy_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, array)
    return base64.b64encode(buf.getvalue()).decode()


def vllm_dtype(num_ids: int) -> str:
    return "uint8" if num_ids <= 256 else "uint16"


def vllm_completion(reqs: list[Req], layout: dict, rid: str) -> dict:
    """A /v1/completions response of one prompt, n = len(reqs) choices (all share reqs[0].prompt)."""
    choices = []
    for i, r in enumerate(reqs):
        rows = full_layers(engine_rows(r), layout["moe_layers"], layout["hidden"]).astype(vllm_dtype(layout["ids"]))
        choices.append(
            {
                "index": i,
                "text": "",
                "finish_reason": "length",
                "prompt_token_ids": r.prompt,
                "token_ids": r.output,
                "routed_experts": npy_b64(rows),
            }
        )
    return {"id": rid, "object": "text_completion", "model": "m", "choices": choices}


def vllm_chat(req: Req, layout: dict, rid: str) -> dict:
    rows = full_layers(engine_rows(req), layout["moe_layers"], layout["hidden"]).astype(vllm_dtype(layout["ids"]))
    return {
        "id": rid,
        "object": "chat.completion",
        "prompt_token_ids": req.prompt,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "token_ids": req.output,
                "routed_experts": npy_b64(rows),
            }
        ],
    }


def vllm_split(req: Req, rid: str) -> dict:
    """v0.21: response-level prompt rows, per-choice output rows (O - 1), MoE layers only, int16 lists."""
    rows = engine_rows(req).astype(np.int16)
    head = len(req.prompt) - req.start
    return {
        "id": rid,
        "object": "text_completion",
        "prompt_token_ids": req.prompt,
        "prompt_routed_experts": rows[:head].tolist(),
        "choices": [{"index": 0, "token_ids": req.output, "routed_experts": rows[head:].tolist()}],
    }


def vllm_offline(req: Req, layout: dict, rid: str) -> dict:
    """json.dumps of a RequestOutput's fields, the routing ndarray as nested lists."""
    rows = full_layers(engine_rows(req), layout["moe_layers"], layout["hidden"])
    return {
        "request_id": rid,
        "prompt_token_ids": req.prompt,
        "outputs": [{"index": 0, "token_ids": req.output, "routed_experts": rows.tolist()}],
    }


def sglang_response(req: Req, layout: dict, rid: str) -> dict:
    rows = full_layers(engine_rows(req), layout["moe_layers"], layout["hidden"]).astype(np.int32)
    flat = np.ascontiguousarray(rows).tobytes()
    return {
        "text": "",
        "output_ids": req.output,
        "meta_info": {
            "id": rid,
            "finish_reason": {"type": "length"},
            "routed_experts": base64.b64encode(flat).decode(),
        },
    }


def write_lines(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def recorder_dump(
    path: Path,
    reqs: list[Req],
    passes: list[tuple[str, list[tuple[int, int, int]]]],
    layout: dict,
    rank: int = 0,
    slots: int = 8,
) -> Path:
    """torch.save of an SGLang per-token recorder dump. `passes`: (mode, [(request, first token,
    count)]) in batch order; mode "extend" (count tokens of the request's segment) or "decode"
    (count 1). Physical ids go through a map with replicas of experts 0 and 3 (ids E, E+1)."""
    import torch

    E, hidden, moe = layout["experts"], layout["hidden"], layout["moe_layers"]
    p2l = np.tile(np.r_[np.arange(E), [0, 3]], (hidden, 1))
    rng = np.random.default_rng(rank)
    records = []
    for fpid, (mode, segs) in enumerate(passes):
        tok, pos, rows = [], [], []
        for r, first, count in segs:
            for t in range(first, first + count):
                tok.append(reqs[r].tokens[t])
                pos.append(t)
                rows.append(reqs[r].experts[t])
        logical = np.stack(rows)  # (n, moe, k)
        phys = logical.copy()
        swap = rng.random(phys.shape) < 0.5
        phys[swap & (logical == 0)] = E
        phys[swap & (logical == 3)] = E + 1
        out = np.full((len(tok), hidden, slots), -1, np.int64)
        out[:, moe, : phys.shape[2]] = phys
        records.append(
            {
                "forward_pass_id": fpid,
                "rank": rank,
                "gatherer_key": "primary",
                "forward_mode": 1 if mode == "extend" else 2,
                "extend_seq_lens": [c for _, _, c in segs] if mode == "extend" else None,
                "input_ids": tok,
                "positions": pos,
                "topk_ids_of_layer": torch.tensor(out.transpose(1, 0, 2), dtype=torch.int32),
                "misc_objects": [],
            }
        )
    torch.save({"records": records, "last_physical_to_logical_map": torch.tensor(p2l)}, path)
    return path


def batch_passes(reqs: list[Req]) -> list[tuple[str, list[tuple[int, int, int]]]]:
    """All prompts in one extend pass, then one decode pass per step of every request still running
    (in batch order; finished requests leave)."""
    passes = [("extend", [(i, 0, len(r.prompt)) for i, r in enumerate(reqs)])]
    step = 0
    while True:
        live = [(i, len(r.prompt) + step, 1) for i, r in enumerate(reqs) if len(r.prompt) + step < len(r.tokens) - 1]
        if not live:
            return passes
        passes.append(("decode", live))
        step += 1
