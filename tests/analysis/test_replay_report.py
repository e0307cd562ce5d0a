"""`routelens.replay_report` / `routelens replay`: a model's own float32 trace replays with no difference;
planted flips in a known share of token-layers are counted exactly, and cost only where they are."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import routelens
from routelens.store.schema import nested_array, nested_to_numpy
from routelens.trace import TraceConfig
from tests.trace.corpora import DOCS, write_txt


@pytest.fixture(scope="module")
def own_trace(tiny_mixtral, tmp_path_factory):
    folder = tmp_path_factory.mktemp("replay")
    corpus = write_txt(folder / "a.txt", DOCS)
    code = write_txt(folder / "b.txt", DOCS[::-1])
    config = TraceConfig(seq_len=16, batch_size=3, weights_dtype="float32", dtype="float32", progress=False)
    return routelens.trace(str(tiny_mixtral), [f"web={corpus}", f"code={code}"], folder / "t", config)


def test_replaying_the_models_own_float32_trace_changes_nothing(tiny_mixtral, own_trace, tmp_path):
    out = tmp_path / "replay.json"
    report = routelens.replay_report(str(tiny_mixtral), own_trace, out, progress=False)
    assert json.loads(out.read_text()) == report
    assert set(report) >= {"routing_differs", "any_layer_differs", "delta_logprob", "kl", "by_margin"}
    assert set(report["routing_differs"]) == {"web", "code", "all"}
    layers = [str(x) for x in own_trace.layers]
    for domain, shares in report["routing_differs"].items():
        assert list(shares) == layers and all(v == 0.0 for v in shares.values()), domain
    assert all(v == 0.0 for v in report["any_layer_differs"].values())
    for stats in report["delta_logprob"].values():
        assert all(abs(v) <= 1e-5 for v in stats.values())
    assert all(abs(v) <= 1e-5 for s in report["kl"].values() for v in s.values())
    bins = report["by_margin"]
    assert len(bins["edges"]) == 11 and sum(bins["token_layers"]) == report["tokens"] * len(layers)
    assert bins["edges"] == sorted(bins["edges"]) and bins["edges"][0] >= 0


def _plant(trace, folder, every: int = 5):
    """A copy of `trace` whose experts are flipped (the first choice set to an id outside the row) in
    every `every`-th row of layer slot 1 and every (2 * every)-th row of slot 0 of documents with
    an even id; returns (path, flipped (n, L) bool, doc_id (n,))."""
    shutil.copytree(trace.path, folder)
    flipped_all, docs = [], []
    for shard in sorted((folder / "shards").glob("*.parquet")):
        table = pq.read_table(shard)
        experts = (
            nested_to_numpy(table.column("experts"), trace.top_k).reshape(len(table), len(trace.layers), -1).copy()
        )
        doc = table.column("doc_id").to_numpy()
        position = table.column("position").to_numpy()
        rows = np.arange(len(table))
        # never a window's last token: its flip would change nothing the report measures
        window = doc * 10_000 + position // 16
        inner = np.concatenate([window[1:] == window[:-1], [False]])
        flipped = np.zeros(experts.shape[:2], dtype=bool)
        flipped[:, 1] = (rows % every == 0) & (doc % 2 == 0) & inner
        flipped[:, 0] = (rows % (2 * every) == 0) & (doc % 2 == 0) & inner
        for r, s in zip(*np.nonzero(flipped)):
            unused = [e for e in range(trace.num_experts) if e not in experts[r, s]]
            experts[r, s, 0] = unused[0]
        column = nested_array(experts, table.schema.field("experts").type.value_type.value_type)
        table = table.set_column(table.schema.get_field_index("experts"), "experts", column)
        pq.write_table(table, shard)
        flipped_all.append(flipped)
        docs.append(doc)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["shards"]:  # the rewritten shards' sizes, as a trace lists them
        entry["bytes"] = (folder / "shards" / entry["file"]).stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, np.concatenate(flipped_all), np.concatenate(docs)


def test_planted_flips_are_counted_exactly_and_cost_only_where_they_are(tiny_mixtral, own_trace, tmp_path):
    path, flipped, doc = _plant(own_trace, tmp_path / "planted")
    planted = routelens.open_trace(path)
    report = routelens.replay_report(str(tiny_mixtral), planted, progress=False)
    for s, layer in enumerate(planted.layers):
        assert report["routing_differs"]["all"][str(layer)] == pytest.approx(flipped[:, s].mean(), abs=0), layer
    assert report["any_layer_differs"]["all"] == pytest.approx(flipped.any(1).mean(), abs=0)
    # per document: delta and kl non-zero exactly on the documents holding a flip. One window per pass:
    # tokens of one batch share each expert's matmul, whose rounding depends on how many rows it gets,
    # so a flip elsewhere in a batch moves other documents' numbers by ~1e-7
    per_doc = routelens.replay_report(str(tiny_mixtral), planted, batch_size=1, progress=False, per_document=True)
    per_doc = per_doc["per_document"]
    holding = {int(d) for d in np.unique(doc[flipped.any(1)])}
    assert holding and len(holding) < len(per_doc)
    for d, numbers in per_doc.items():
        assert numbers["flips"] == int(flipped[doc == int(d)].sum()), d
        moved = numbers["max_abs_delta_logprob"] > 0 and numbers["max_kl"] > 0
        still = numbers["max_abs_delta_logprob"] == 0 and numbers["max_kl"] == 0
        assert moved if int(d) in holding else still, (d, numbers)


def test_a_trace_of_another_model_is_refused_in_one_line(own_trace, tmp_path):
    from routelens.models.tiny import build

    other = build("qwen3_moe", "transformers.models.qwen3_moe.modeling_qwen3_moe")
    with pytest.raises(routelens.RoutelensError, match="replay a trace of this model") as info:
        routelens.replay_report(other, own_trace, progress=False)
    assert "\n" not in str(info.value)


def test_the_replay_command_writes_the_report(tiny_mixtral, own_trace, tmp_path):
    from typer.testing import CliRunner

    from routelens.cli.main import app

    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app, ["replay", str(tiny_mixtral), "--trace", str(own_trace.path), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["any_layer_differs"]["all"] == 0.0 and "wrote" in result.output


def test_the_report_shows_a_replay_section(tiny_mixtral, own_trace, tmp_path):
    out = tmp_path / "replay.json"
    routelens.replay_report(str(tiny_mixtral), own_trace, out, progress=False)
    page = routelens.build_report(own_trace.path, tmp_path / "report.html", replay=out, progress=False)
    html = page.read_text()
    assert "Routing replay" in html and "Share of token-layers whose expert set differs" in html
    assert "by the router&#x27;s own selection margin" in html or "by the router's own selection margin" in html
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"routing_differs": {"all": {"7": 0.0}}, "any_layer_differs": {"all": 0.0}}))
    with pytest.raises(routelens.RoutelensError, match="covers layers"):
        routelens.build_report(own_trace.path, tmp_path / "r2.html", replay=bad, progress=False)


def test_a_trace_of_another_vocabulary_is_refused_in_one_line(own_trace):
    from routelens.models.tiny import build

    small = build("mixtral", "transformers.models.mixtral.modeling_mixtral", num_hidden_layers=2, vocab_size=64)
    with pytest.raises(routelens.RoutelensError, match="model's vocabulary has 64") as info:
        routelens.replay_report(small, own_trace, progress=False)
    assert "\n" not in str(info.value)


def test_an_interrupted_replay_resumes_after_its_last_batch(tiny_mixtral, own_trace, tmp_path, monkeypatch):
    from routelens.analysis import replay_report as module

    whole = routelens.replay_report(str(tiny_mixtral), own_trace, progress=False, batch_size=2)
    real, calls = module._batch_rows, []

    def failing(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    out = tmp_path / "r.json"
    monkeypatch.setattr(module, "_batch_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        routelens.replay_report(str(tiny_mixtral), own_trace, out, progress=False, batch_size=2)
    assert not out.exists() and (tmp_path / "r.json.partial.npz").is_file()
    resumed = []
    monkeypatch.setattr(module, "_batch_rows", lambda *a: resumed.append(1) or real(*a))
    report = routelens.replay_report(str(tiny_mixtral), own_trace, out, progress=False, batch_size=2)
    windows = len(module._windows(*(lambda c: (c.doc_id, c.position))(own_trace.load()), 16))
    assert len(resumed) == -(-windows // 2) - 2  # only the batches after the checkpoint ran again
    assert report == whole and not (tmp_path / "r.json.partial.npz").exists()
