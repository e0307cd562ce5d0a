"""The trace stage under misuse (issue 17.1, 17.4, 17.6): the manifest lists every shard, a deleted
one is refused by readers and rewritten by re-running the trace; `./model` and `model/` are one
model; `--overwrite` removes only what routelens wrote; `--seq-len` past the model's positions is
refused; two traces into one directory at once (with and without --overwrite) never leave a mixed
or half-replaced trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from routelens import open_trace
from routelens.cli.main import app
from tests.trace.corpora import DOCS, write_txt


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def here(tiny_mixtral, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(tiny_mixtral, "model")
    write_txt(tmp_path / "a.txt", DOCS * 3)
    return tmp_path


TRACE = ["-c", "web=a.txt", "-o", "t", "-q", "--seq-len", "16", "--shard-tokens", "40"]


def test_a_deleted_shard_is_refused_and_rewritten_and_paths_are_one_model(here):
    assert run("trace", "./model", *TRACE).exit_code == 0
    listed = json.loads(Path("t/manifest.json").read_text())["shards"]
    shards = sorted(Path("t/shards").glob("part-*.parquet"))
    assert [s["file"] for s in listed] == [p.name for p in shards] and len(shards) > 2
    assert [s["bytes"] for s in listed] == [p.stat().st_size for p in shards]
    assert sum(s["rows"] for s in listed) == open_trace("t").num_tokens
    again = run("trace", "model/", *TRACE)  # the same model, written another way: the trace is returned as is
    assert again.exit_code == 0, again.output
    kept = shards[1].read_bytes()
    shards[1].unlink()
    for command in (["info", "t"], ["analyze", "t", "-q"]):
        refused = run(*command)
        assert refused.exit_code == 2 and "lacks 1 of its" in refused.output and "re-run" in refused.output
    assert run("trace", "model", *TRACE).exit_code == 0
    assert shards[1].read_bytes() == kept
    assert run("info", "t").exit_code == 0


def test_overwrite_keeps_a_users_files_and_seq_len_is_bounded(here):
    assert run("trace", "model", *TRACE).exit_code == 0
    Path("t/shards/notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in Path("t").rglob("*") if p.is_file()}
    refused = run("trace", "model", *TRACE[:-4], "--seq-len", "32", "--overwrite")
    assert refused.exit_code == 2 and "notes.txt" in refused.output
    assert {p: p.read_bytes() for p in Path("t").rglob("*") if p.is_file()} == before
    too_long = run("trace", "model", "-c", "web=a.txt", "-o", "t2", "-q", "--seq-len", "4096")
    assert too_long.exit_code == 2 and "max_position_embeddings 512" in too_long.output
    assert not Path("t2").exists()
    decoding_past = run("trace", "model", "-c", "web=a.txt", "-o", "t3", "-q", "--seq-len", "500", "--generate", "20")
    assert decoding_past.exit_code == 2 and "--generate 20 = 520 positions" in decoding_past.output
    assert "max_position_embeddings 512" in decoding_past.output and not Path("t3").exists()


RUNNER = """
import json, sys
from typer.testing import CliRunner
from routelens.cli.main import app
for line in sys.stdin:
    result = CliRunner().invoke(app, json.loads(line))
    print(json.dumps({"code": result.exit_code, "out": result.output}), flush=True)
"""


def rows(path) -> tuple[np.ndarray, np.ndarray]:
    chunk = open_trace(path).load()
    return chunk.token_id, chunk.experts


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_two_traces_into_one_directory_never_mix(here, overwrite):
    """10 rounds each way (20 in all): two live processes start `trace --seq-len 16` and `32` into
    one --out at the same moment; afterwards the directory holds exactly one of the two traces."""
    refs = {}
    for n in (16, 32):
        assert run("trace", "model", "-c", "web=a.txt", "-o", f"ref{n}", "-q", "--seq-len", str(n)).exit_code == 0
        refs[n] = rows(f"ref{n}")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=here
        )
        for _ in range(2)
    ]
    codes = []
    try:
        for round_ in range(10):
            for worker, n in zip(workers, (16, 32) if round_ % 2 else (32, 16)):
                args = ["trace", "model", "-c", "web=a.txt", "-o", "shared", "-q", "--seq-len", str(n)]
                worker.stdin.write(json.dumps(args + (["--overwrite"] if overwrite else [])) + "\n")
                worker.stdin.flush()
            results = [json.loads(w.stdout.readline()) for w in workers]
            codes += [r["code"] for r in results]
            for r in results:
                assert r["code"] in (0, 2), r["out"]
                if r["code"] == 2:
                    assert len(r["out"].strip().splitlines()) == 1 and (
                        "is in use by" in r["out"] or "--overwrite" in r["out"]
                    )
            tr = open_trace("shared")
            assert tr.manifest["complete"]
            n = tr.manifest["seq_len"]
            token_id, experts = rows("shared")
            assert np.array_equal(token_id, refs[n][0]) and np.array_equal(experts, refs[n][1]), (
                f"round {round_}: a mixed trace"
            )
    finally:
        for w in workers:
            w.stdin.close()
            w.wait(timeout=60)
    assert 0 in codes


def test_a_huge_one_line_document_is_cut_before_tokenizing(here, monkeypatch):
    from transformers import AutoTokenizer

    import routelens.trace.plan as plan

    rng = np.random.default_rng(0)
    text = " ".join(rng.choice(["alpha", "beta", "gamma", "routing", "experts,", "the"], size=200_000))
    Path("big.txt").write_text(text + "\n")
    tokenizer_calls = []
    original = AutoTokenizer.from_pretrained("model").__class__.__call__

    def spy(self, texts, *a, **k):
        tokenizer_calls.append(max(len(t) for t in ([texts] if isinstance(texts, str) else texts)))
        return original(self, texts, *a, **k)

    monkeypatch.setattr(AutoTokenizer.from_pretrained("model").__class__, "__call__", spy)
    assert (
        run("trace", "model", "-c", "web=big.txt", "-o", "t", "-q", "--seq-len", "64", "--max-tokens", "300").exit_code
        == 0
    )
    assert max(tokenizer_calls) <= 300 * plan.CUT_CHARS < len(text)  # never the whole text
    whole = original(AutoTokenizer.from_pretrained("model"), text, add_special_tokens=True)["input_ids"]
    traced = open_trace("t").load().token_id
    assert len(traced) == 300 and np.array_equal(traced, np.asarray(whole[:300]))  # the same tokens as the whole text's
