"""Every trace checks itself: the first batch of the user's own corpus runs through the verifier
before anything is written. A capture broken on purpose is refused in one line (exit 2, nothing
on disk); `--no-verify` records anyway and the manifest says so; a family whose routing padding
moves is traced in batches without padding, the same rows as one document at a time."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import transformers
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from routelens.models import hooks as rec_module
from routelens.models.tiny import tiny_config
from tests.conftest import save_tiny_model
from tests.trace.corpora import DOCS, write_txt


def _broken(monkeypatch):
    real = rec_module.experts_inputs

    def shifted(args, kwargs):  # a recorder that misreads every choice by one expert
        index, weights = real(args, kwargs)
        return (index + 1) % 8, weights

    monkeypatch.setattr(rec_module, "experts_inputs", shifted)


def _args(model, corpus, out, *extra):
    return ["trace", str(model), "--corpus", f"web={corpus}", "--out", str(out), "--seq-len", "16", "-q", *extra]


def test_a_broken_capture_is_refused_before_anything_is_written(tiny_mixtral, tmp_path, monkeypatch):
    _broken(monkeypatch)
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    result = CliRunner().invoke(app, _args(tiny_mixtral, corpus, tmp_path / "t"))
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    for part in (
        "mixtral",
        "layer 0",
        f"transformers {transformers.__version__}",
        "routelens families --verify",
        "--no-verify",
    ):
        assert part in lines[0], lines[0]
    assert not (tmp_path / "t").exists()


def test_no_verify_records_anyway_and_the_manifest_says_so(tiny_mixtral, tmp_path, monkeypatch):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    checked = routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp_path / "ok", seq_len=16, progress=False)
    assert checked.manifest["verified"] is True and checked.manifest["transformers"] == transformers.__version__
    _broken(monkeypatch)
    result = CliRunner().invoke(app, _args(tiny_mixtral, corpus, tmp_path / "t", "--no-verify"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["verified"] is False and manifest["complete"]
    info = CliRunner().invoke(app, ["info", str(tmp_path / "t"), "--json", "-"])
    assert json.loads(info.output)["verified"] is False
    assert json.loads(CliRunner().invoke(app, ["info", str(tmp_path / "ok"), "--json", "-"]).output)["verified"] is True
    from routelens.cli.trace_cmd import _verified
    from routelens.trace import summarize

    assert f"matched the model's own on transformers {transformers.__version__}" in _verified(
        summarize(tmp_path / "ok")
    )
    assert "--no-verify" in _verified(summarize(tmp_path / "t"))
    assert CliRunner().invoke(app, ["info", str(tmp_path / "ok")]).exit_code == 0


def test_an_unpadded_family_traces_as_one_document_at_a_time(tmp_path):
    config = tiny_config("deepseek_v4", max_position_embeddings=512)
    model = save_tiny_model(tmp_path / "dsv4", config)
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    settings = dict(seq_len=16, weights_dtype="float32", progress=False)
    batched = routelens.trace(str(model), [f"web={corpus}"], tmp_path / "b8", batch_size=8, **settings)
    alone = routelens.trace(str(model), [f"web={corpus}"], tmp_path / "b1", batch_size=1, **settings)
    assert batched.manifest["unpadded"] is True and batched.manifest["verified"] is True
    assert [pq.read_table(p).to_pylist() for p in batched.shards] == [
        pq.read_table(p).to_pylist() for p in alone.shards
    ]


def test_first_batch_is_the_traces_own(tiny_mixtral, tmp_path):
    from transformers import AutoTokenizer

    from routelens.corpus import parse_corpus_spec
    from routelens.trace import TraceConfig
    from routelens.trace.checks import first_shard
    from routelens.trace.compute import right_padded
    from routelens.trace.plan import batch_rows

    corpus = write_txt(tmp_path / "a.txt", DOCS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_mixtral)

    def first_batch(batch_size: int, equal_lengths: bool):
        shard = first_shard(
            tokenizer, TraceConfig(seq_len=16, batch_size=batch_size), [parse_corpus_spec(f"web={corpus}")]
        )
        rows = batch_rows(shard.windows, batch_size, equal_lengths=equal_lengths)[0]
        return right_padded([shard.windows[i] for i in rows], tokenizer.pad_token_id)

    ids, mask = first_batch(3, equal_lengths=False)
    assert ids.shape == (3, 16) and int(mask[0].sum()) == 16
    _, mask = first_batch(64, equal_lengths=True)
    assert bool(mask.all())  # one length only: no padding


@pytest.mark.parametrize("generate", [0, 3])
def test_generation_traces_check_themselves_too(tiny_mixtral, tmp_path, monkeypatch, generate):
    _broken(monkeypatch)
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    extra = ["--generate", str(generate)] if generate else []
    result = CliRunner().invoke(app, _args(tiny_mixtral, corpus, tmp_path / "t", *extra))
    assert result.exit_code == 2 and "routing wrongly" in result.output
    assert not (tmp_path / "t").exists()
