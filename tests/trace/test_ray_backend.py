"""Tracing on Ray equals the single-process trace (as a set of rows), resumes out-of-order gaps,
and says how to install Ray when it is absent. One local Ray instance (2 CPU actors) per module."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from routelens.errors import RoutelensError
from routelens.trace import TraceConfig

WEB = [
    f"The router sends token {i} to two of eight experts, then mixes their outputs. " * (1 + i % 4) for i in range(14)
]
CODE = [f"def f{i}(x):\n    return x * {i} + {i % 3}" for i in range(12)]
SETTINGS = dict(seq_len=24, batch_size=3, shard_tokens=120, weights_dtype="float32", progress=False)
COLUMNS = ("doc_id", "domain", "position", "token_id", "experts", "weights")


def test_missing_ray_is_one_line_with_the_install_command(monkeypatch):
    from routelens.trace.ray_backend import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RoutelensError, match=r"pip install 'routelens\[ray\]'"):
        require_ray()


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import torch

    # Ray gives each 1-CPU actor one intra-op thread; this process computes with as many, so that
    # float sums run in the same order and rows match to the bit (more threads reorder the last ulp).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpora")
    (d / "web.txt").write_text("\n\n".join(WEB) + "\n")
    (d / "code.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in CODE))
    return [f"web={d / 'web.txt'}", f"code={d / 'code.jsonl'}"]


@pytest.fixture(scope="module")
def reference(ray_instance, tiny_mixtral, corpora, tmp_path_factory):
    return routelens.trace(str(tiny_mixtral), corpora, tmp_path_factory.mktemp("ref") / "t", TraceConfig(**SETTINGS))


def row_set(tr) -> dict[str, np.ndarray]:
    """All rows, sorted by (doc_id, position): equal dicts mean equal sets of rows."""
    rows = tr.load(["weights"])
    order = np.lexsort((rows.position, rows.doc_id))
    assert len(np.unique(rows.doc_id * 10_000 + rows.position)) == len(rows)  # no row twice
    return {c: getattr(rows, c)[order] for c in COLUMNS}


def assert_same_rows(got, want) -> None:
    a, b = row_set(got), row_set(want)
    for c in COLUMNS:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)


def test_ray_trace_equals_single_process_then_resumes_gaps(ray_instance, tiny_mixtral, corpora, reference, tmp_path):
    out = tmp_path / "ray"
    args = [
        "trace",
        str(tiny_mixtral),
        *sum((["--corpus", c] for c in corpora), []),
        "--out",
        str(out),
        "--ray",
        "--ray-workers",
        "2",
        "--seq-len",
        "24",
        "--batch-size",
        "3",
        "--shard-tokens",
        "120",
        "--weights-dtype",
        "float32",
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "traced" in result.output
    got = routelens.open_trace(out)
    assert reference.manifest["totals"]["shards"] >= 5  # enough shards for both actors and for gaps
    assert_same_rows(got, reference)
    # Same plan: the same shard files, the same totals and per-corpus counts, the same identity.
    assert [p.name for p in got.shards] == [p.name for p in reference.shards]
    for key in ("totals", "corpora", "identity", "moe_layers", "num_experts", "top_k", "family"):
        assert got.manifest[key] == reference.manifest[key], key
    assert got.manifest["corpora"][1]["documents"] == len(CODE)

    # A driver killed mid-run: manifest not complete, shards 1 and 3 missing (actors finish out of
    # order), a temporary file left behind. The re-run writes exactly the missing shards.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(complete=False, totals={})
    (out / "manifest.json").write_text(json.dumps(manifest))
    shards = got.shards
    for i in (1, 3):
        shards[i].unlink()
    (out / "shards" / ".part-00001.parquet.dead.tmp").write_bytes(b"half a shard")
    kept = {p.name: p.stat().st_mtime_ns for p in shards if p.exists()}
    resumed = routelens.trace(str(tiny_mixtral), corpora, out, TraceConfig(**SETTINGS, ray="local", ray_workers=2))
    assert resumed.manifest["complete"] is True
    assert_same_rows(resumed, reference)
    assert {p.name: p.stat().st_mtime_ns for p in resumed.shards if p.name in kept} == kept  # skipped, not rewritten
    assert not list((out / "shards").glob(".*.tmp"))
    assert resumed.manifest["totals"] == reference.manifest["totals"]


def test_single_process_resumes_a_ray_trace(ray_instance, tiny_mixtral, corpora, reference, tmp_path):
    """The Ray settings are not part of the trace's identity: either path finishes the other's run."""
    out = tmp_path / "mixed"
    routelens.trace(str(tiny_mixtral), corpora, out, TraceConfig(**SETTINGS, ray="local", ray_workers=2))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    last = sorted((out / "shards").glob("part-*.parquet"))[-1]
    last.unlink()
    finished = routelens.trace(str(tiny_mixtral), corpora, out, TraceConfig(**SETTINGS))
    assert_same_rows(finished, reference)
    assert finished.manifest["totals"] == reference.manifest["totals"]


def test_a_dead_actor_s_shard_is_retried_and_never_half_written(
    ray_instance, tiny_mixtral, corpora, reference, tmp_path, monkeypatch
):
    import ray.cloudpickle

    import routelens.trace.ray_backend as ray_trace
    from tests.trace import crashing

    ray.cloudpickle.register_pickle_by_value(crashing)
    marker = tmp_path / "crashed"
    monkeypatch.setattr(crashing.CrashOnceShardTracer, "marker", str(marker))
    monkeypatch.setattr(ray_trace, "ShardTracer", crashing.CrashOnceShardTracer)
    out = tmp_path / "crash"
    got = routelens.trace(str(tiny_mixtral), corpora, out, TraceConfig(**SETTINGS, ray="local", ray_workers=2))
    assert marker.exists()  # an actor did die in the middle of shard 2
    assert_same_rows(got, reference)
    assert got.manifest["totals"] == reference.manifest["totals"]
    assert not list((out / "shards").glob(".*.tmp"))


def test_expert_norms_on_ray_equal_the_single_process_ones(ray_instance, tiny_mixtral, corpora, tmp_path):
    """`--store-expert-norms` through Ray actors: the same norms, row for row, as in this process."""
    settings = TraceConfig(**SETTINGS, store_expert_norms=True)
    local = routelens.trace(str(tiny_mixtral), corpora, tmp_path / "local", settings)
    ray_run = routelens.trace(
        str(tiny_mixtral),
        corpora,
        tmp_path / "ray",
        TraceConfig(**SETTINGS, store_expert_norms=True, ray="local", ray_workers=2),
    )
    assert_same_rows(ray_run, local)
    norms = []
    for tr in (local, ray_run):
        rows = tr.load(["expert_norms"])
        order = np.lexsort((rows.position, rows.doc_id))
        norms.append(rows.expert_norms[order])
    assert norms[0].shape[1:] == (len(local.layers), local.top_k) and (norms[0] > 0).all()
    np.testing.assert_array_equal(norms[0], norms[1])
