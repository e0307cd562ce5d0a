"""Fixtures of the bad-input suite: one tiny model, one small corpus and one real trace of it per
session, and helpers that make damaged copies of them (the originals are never touched)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.trace.corpora import DOCS, write_txt


@dataclass
class Env:
    root: Path
    model: Path  # tiny Mixtral, 8 experts, top-2, with its tokenizer
    corpus: Path  # a .txt of blank-line separated documents
    trace: Path  # `routelens trace` of the model over the corpus
    analysis: Path  # `routelens analyze --json` of the trace
    other: Path  # a trace of other tokens (a synthetic one)


@pytest.fixture(scope="session")
def env(tiny_mixtral, tmp_path_factory) -> Env:
    from tests.report.conftest import make_trace

    root = tmp_path_factory.mktemp("bad-input")
    corpus = Path(write_txt(root / "web.txt", DOCS))
    trace = root / "trace"
    run = CliRunner().invoke(
        app, ["trace", str(tiny_mixtral), "--corpus", f"web={corpus}", "--out", str(trace), "-q", "--seq-len", "32"]
    )
    assert run.exit_code == 0, run.output
    analysis = root / "analysis.json"
    run = CliRunner().invoke(
        app, ["analyze", str(trace), "--json", str(analysis), "--bootstrap", "0", "-q", "--min-count", "1"]
    )
    assert run.exit_code == 0, run.output
    other = make_trace(root / "other", layers=(0, 1), domains=("web",), first_dist={}).path
    return Env(root, Path(tiny_mixtral), corpus, trace, analysis, other)


def checksum(path: Path) -> str:
    """One digest of a file, or of every name and byte under a folder; "absent" when missing."""
    if not path.exists():
        return "absent"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in files:
        digest.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


def copy_trace(env: Env, dest: Path, damage: str | None = None) -> Path:
    """A copy of the session's trace, damaged as named."""
    shutil.copytree(env.trace, dest)
    shard = sorted((dest / "shards").glob("part-*.parquet"))[0]
    manifest = dest / "manifest.json"
    if damage == "zero-byte shard":
        shard.write_bytes(b"")
    elif damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "corrupt shard":
        data = bytearray(shard.read_bytes())
        data[8:-8] = bytes(len(data) - 16)  # magic bytes and footer length kept, everything between zeroed
        shard.write_bytes(bytes(data))
    elif damage == "manifest list":
        manifest.write_text(json.dumps([json.loads(manifest.read_text())]))
    elif damage == "manifest missing keys":
        m = json.loads(manifest.read_text())
        del m["num_experts"], m["moe_layers"]
        manifest.write_text(json.dumps(m))
    elif damage == "format 99":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 99}))
    elif damage == "manifest not json":
        manifest.write_text('{"format": "routelens-trace", ')
    elif damage == "vocab":
        (dest / "vocab.json").write_text(json.dumps({"tokens": {"0": "a"}}))
    else:
        assert damage is None, damage
    return dest


def copy_model(env: Env, dest: Path, damage: str | None = None) -> Path:
    """A copy of the session's tiny model, damaged as named."""
    shutil.copytree(env.model, dest)
    weights = dest / "model.safetensors"
    config = dest / "config.json"
    if damage == "corrupt weights":
        weights.write_bytes(b"\xff" * 64 + weights.read_bytes()[64:])
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "experts disagree":
        config.write_text(json.dumps({**json.loads(config.read_text()), "num_local_experts": 4}))
    elif damage == "top_k too large":
        config.write_text(json.dumps({**json.loads(config.read_text()), "num_experts_per_tok": 16}))
    elif damage == "no tokenizer":
        for p in dest.iterdir():
            if "token" in p.name or p.name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
                p.unlink()
    elif damage == "config not json":
        config.write_text("{not json")
    else:
        assert damage is None, damage
    return dest
