"""What `routelens info` shows about a trace directory, read from its manifest and shard files.

Torch-free on purpose (a test checks it): summarising a trace must not pay for loading PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path

from routelens.atomic import json_text, write_json
from routelens.store.reader import open_trace

FORMAT = {"indent": 2}  # the summary's JSON, in a file and on stdout alike


def summarize(path: str | os.PathLike) -> dict:
    """Tokens per domain, layers, experts, bytes per token-layer of the trace at `path`."""
    tr = open_trace(path, allow_incomplete=True)
    m = tr.manifest
    shard_bytes = sum(p.stat().st_size for p in tr.shards)
    tokens = tr.num_tokens
    return {
        "path": str(tr.path),
        "complete": bool(m.get("complete")),
        "model": m["model"].get("name_or_path"),
        "architecture": m["model"].get("architecture"),
        "family": m.get("family"),
        "routing_rule": m.get("routing_rule"),
        "moe_layers": tr.layers,
        "num_experts": tr.num_experts,
        "top_k": tr.top_k,
        "tokens": tokens,
        "domains": {c["name"]: c.get("tokens") for c in m["corpora"]},
        "documents": m.get("totals", {}).get("documents"),
        "columns": tr.columns,
        "shards": len(tr.shards),
        "bytes": shard_bytes,
        "bytes_per_token_layer": shard_bytes / max(1, tokens * len(tr.layers)),
        "seq_len": m.get("seq_len"),
        # the first-batch check (None: a trace written before routelens checked itself)
        "verified": m.get("verified"),
        "transformers": m.get("transformers"),
        "unpadded": bool(m.get("unpadded")),
        # imported traces: requests left out, recorder tokens not chained, anomalies {name: count}
        "import": m.get("import"),
    }


def dumps(info: dict) -> str:
    return json_text(info, **FORMAT)


def write_summary(info: dict, path: str | os.PathLike) -> Path:
    """Write `info` (a `summarize` result) to the JSON file `path`, atomically; `routelens info --json`."""
    return write_json(path, info, newline=True, what="--json", **FORMAT)
