"""The trace store: schema round trips, streaming, refusals, atomic shards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routelens import RoutelensError, open_trace
from routelens.store.schema import FORMAT_VERSION, expert_id_type, nested_array, nested_to_numpy
from routelens.store.writer import TraceWriter
from routelens.synthetic import SyntheticSpec, write_synthetic_trace


@pytest.mark.parametrize("E, dtype", [(8, np.uint8), (256, np.uint8), (300, np.uint16)])
def test_nested_round_trip(E, dtype):
    rng = np.random.default_rng(0)
    values = rng.integers(0, E, size=(50, 3, 2)).astype(dtype)  # (tokens, layers, k)
    arr = nested_array(values, expert_id_type(E))
    assert arr.type.list_size == 3 and arr.type.value_type.list_size == 2
    np.testing.assert_array_equal(nested_to_numpy(arr, 2), values)
    # Slices keep their offset.
    np.testing.assert_array_equal(nested_to_numpy(arr.slice(7, 5), 2), values[7:12])


def test_synthetic_trace_round_trip_and_streaming(tmp_path):
    spec = SyntheticSpec(num_docs=30, doc_len=(1, 40), layers=(0, 3, 7), num_experts=300, top_k=3, seed=1)
    write_synthetic_trace(tmp_path / "t", spec)
    tr = open_trace(tmp_path / "t")
    assert tr.layers == [0, 3, 7] and tr.num_experts == 300 and tr.top_k == 3 and tr.domains == ["a", "b"]
    whole = tr.load(["weights"])
    assert whole.experts.dtype == np.uint16 and whole.experts.shape == (tr.num_tokens, 3, 3)
    assert whole.experts.max() >= 256  # ids beyond uint8 survive
    # k distinct experts per token and layer
    s = np.sort(whole.experts, -1)
    assert (s[..., 1:] != s[..., :-1]).all()
    parts = list(tr.iter_chunks(["weights"], rows=17))
    assert max(len(p) for p in parts) <= 17 and sum(len(p) for p in parts) == len(whole)
    np.testing.assert_array_equal(np.concatenate([p.experts for p in parts]), whole.experts)
    assert list(np.unique(whole.domain)) == [0, 1]


def test_chunks_are_joined_from_small_parquet_reads(tmp_path, monkeypatch):
    # Parquet is decoded a few rows at a time (bounded Arrow memory) and joined into chunks of
    # `rows` rows within each shard: the same chunks as reading `rows` at once.
    from routelens.store import reader

    spec = SyntheticSpec(num_docs=30, doc_len=(1, 40), layers=(0, 3), num_experts=8, top_k=2, seed=2)
    tr = open_trace(write_synthetic_trace(tmp_path / "t", spec))
    want = [len(b) for s in tr.shards for b in pq.ParquetFile(s).iter_batches(batch_size=50)]
    whole = tr.load(["weights"])  # read in one piece per shard
    monkeypatch.setattr(reader, "READ_ROWS", 7)
    parts = list(tr.iter_chunks(["weights"], rows=50))
    assert [len(p) for p in parts] == want and len(want) > len(tr.shards)
    for name in ("doc_id", "position", "token_id", "experts", "weights"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name))


def test_planted_repeat_probability(tmp_path):
    spec = SyntheticSpec(num_docs=200, doc_len=100, repeat=0.4, num_experts=8, seed=3)
    chunk = open_trace(write_synthetic_trace(tmp_path / "t", spec)).load()
    first = chunk.experts[:, 0, 0]
    same_doc = chunk.doc_id[1:] == chunk.doc_id[:-1]
    rate = (first[1:] == first[:-1])[same_doc].mean()
    assert abs(rate - (0.4 + 0.6 / 8)) < 0.01


def test_missing_column_and_missing_trace(tmp_path):
    write_synthetic_trace(tmp_path / "t", SyntheticSpec(num_docs=2, doc_len=4))
    with pytest.raises(RoutelensError, match="no column probs.*--store-probs"):
        next(open_trace(tmp_path / "t").iter_chunks(["probs"]))
    with pytest.raises(RoutelensError, match="no routelens trace"):
        open_trace(tmp_path / "absent")


def test_incomplete_trace_is_refused_unless_asked(tmp_path):
    write_synthetic_trace(tmp_path / "t", SyntheticSpec(num_docs=2, doc_len=4))
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    (tmp_path / "t" / "manifest.json").write_text(json.dumps({**m, "complete": False}))
    with pytest.raises(RoutelensError, match="incomplete"):
        open_trace(tmp_path / "t")
    assert open_trace(tmp_path / "t", allow_incomplete=True).num_tokens == 16


def test_writer_refuses_foreign_directory_and_other_identity(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RoutelensError, match="not a routelens trace"):
        TraceWriter(tmp_path / "mine", {"a": 1})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    w = TraceWriter(tmp_path / "t", {"a": 1})
    w.write_manifest({"format": "routelens-trace"})
    table = pa.table({"x": [1, 2]})
    w.write_shard(0, table, {"next_doc": 1})
    with pytest.raises(RoutelensError, match="--overwrite"):
        TraceWriter(tmp_path / "t", {"a": 2})
    assert (tmp_path / "t" / "shards" / "part-00000.parquet").exists()
    # Same identity resumes: completed shards are reported, stale temporaries removed.
    (tmp_path / "t" / "shards" / ".part-00001.parquet.tmp").write_bytes(b"half")
    again = TraceWriter(tmp_path / "t", {"a": 1})
    assert [m["next_doc"] for m in again.completed_shards()] == [1]
    assert not (tmp_path / "t" / "shards" / ".part-00001.parquet.tmp").exists()
    TraceWriter(tmp_path / "t", {"a": 2}, overwrite=True)
    assert not (tmp_path / "t" / "shards" / "part-00000.parquet").exists()


def test_shard_metadata_is_self_describing(tmp_path):
    w = TraceWriter(tmp_path / "t", {"a": 1})
    w.write_shard(0, pa.table({"x": [1]}), {"next_doc": 5, "rows": 1})
    meta = json.loads(pq.read_schema(tmp_path / "t" / "shards" / "part-00000.parquet").metadata[b"routelens.shard"])
    assert meta == {"format": "routelens-trace", "format_version": FORMAT_VERSION, "index": 0, "next_doc": 5, "rows": 1}
    assert FORMAT_VERSION == 2  # weights optional, phase column (docs/trace-format.md)
