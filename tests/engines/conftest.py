"""A real trace of a tiny Mixtral, and writers of what engines would have returned for its tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE_TEXT


@pytest.fixture(scope="session")
def mixtral_trace(tiny_mixtral, tmp_path_factory) -> Path:
    """The tiny Mixtral traced over two domains of the sample text (weights included)."""
    import routelens

    root = tmp_path_factory.mktemp("engines")
    (root / "code.txt").write_text("\n\n".join(SAMPLE_TEXT[::2]))
    (root / "prose.txt").write_text("\n\n".join(SAMPLE_TEXT[1::2]))
    out = root / "trace"
    routelens.trace(
        tiny_mixtral, [f"code={root / 'code.txt'}", f"prose={root / 'prose.txt'}"], out, seq_len=64, progress=False
    )
    return out


def documents(trace_path: Path) -> list[dict]:
    """Per document of a trace: its domain, token ids and (tokens, layers, k) experts."""
    from routelens import open_trace

    tr = open_trace(trace_path)
    rows = tr.load()
    out = []
    for d in np.unique(rows.doc_id):
        sel = rows.doc_id == d
        out.append(
            {
                "domain": tr.domains[rows.domain[sel][0]],
                "tokens": rows.token_id[sel].tolist(),
                "experts": rows.experts[sel].astype(np.int64),
            }
        )
    return out


def split(doc: dict, last_run: bool = True) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(prompt, output, prompt experts, output experts): the first half of a document is the prompt;
    without `last_run` the last token's routing is left out, as an engine that never runs it does."""
    P = max(1, len(doc["tokens"]) // 2)
    tail = doc["experts"][P:] if last_run else doc["experts"][P:-1]
    return doc["tokens"][:P], doc["tokens"][P:], doc["experts"][:P], tail


def write_vllm_jsonl(
    path: Path, docs: list[dict], *, pad_layers: list[int] | None = None, last_run: bool = True
) -> Path:
    """vLLM-shaped JSON lines; `pad_layers` inserts dense layers of -1 at those decoder indices."""
    lines = []
    for i, doc in enumerate(docs):
        prompt, output, head, tail = split(doc, last_run)
        if pad_layers:
            head, tail = (_pad(a, pad_layers) for a in (head, tail))
        lines.append(
            json.dumps(
                {
                    "prompt_token_ids": prompt,
                    "output_token_ids": output,
                    "prompt_routed_experts": head.tolist(),
                    "routed_experts": tail.tolist(),
                    "domain": doc["domain"],
                    "request_id": f"r{i}",
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sglang_jsonl(path: Path, docs: list[dict], *, with_shape: bool = False) -> Path:
    """SGLang-shaped JSON lines: base64 int32 routing of the prompt and the output, last token not run."""
    lines = []
    for doc in docs:
        prompt, output, head, tail = split(doc, last_run=False)
        ids = np.concatenate([head, tail]).astype("<i4")
        meta = {"routed_experts": base64.b64encode(ids.tobytes()).decode()}
        if with_shape:
            meta = {"routed_experts_b64": meta["routed_experts"], "shape": list(ids.shape)}
        lines.append(
            json.dumps({"prompt_token_ids": prompt, "output_ids": output, "meta_info": meta, "domain": doc["domain"]})
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def _pad(experts: np.ndarray, dense: list[int]) -> np.ndarray:
    out = experts
    for layer in sorted(dense):
        out = np.insert(out, layer, -1, axis=1)
    return out


@pytest.fixture(scope="session")
def dense_model(tmp_path_factory) -> Path:
    """A Qwen2-MoE config of 3 decoder layers whose layer 1 is dense (8 experts, top-2): config and
    tokenizer only, no weights (import reads neither)."""
    from transformers import Qwen2MoeConfig

    from tests.conftest import build_tokenizer

    path = tmp_path_factory.mktemp("models") / "qwen2moe-dense1"
    tokenizer = build_tokenizer()
    config = Qwen2MoeConfig(
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=8,
        num_experts_per_tok=2,
        mlp_only_layers=[1],
        vocab_size=len(tokenizer),
    )
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
