"""Models larger than a device: a trace whose --max-memory forces the layers to disk equals the
in-memory trace row for row, and a Ray actor with several GPUs loads its model with a device map
(the actor's code path, run here in-process on CPU: spreading over real GPUs needs a GPU node)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from routelens.trace import DeviceMap, TraceConfig
from tests.trace.corpora import DOCS, write_txt

SETTINGS = dict(seq_len=16, batch_size=3, shard_tokens=60, weights_dtype="float32", progress=False)


def shard_rows(tr) -> list[list[dict]]:
    return [pq.read_table(p).to_pylist() for p in tr.shards]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_txt(tmp_path_factory.mktemp("corpus") / "a.txt", DOCS * 3)


@pytest.fixture(scope="module")
def in_memory(tiny_mixtral, corpus, tmp_path_factory):
    return routelens.trace(
        str(tiny_mixtral), [f"web={corpus}"], tmp_path_factory.mktemp("mem") / "t", TraceConfig(**SETTINGS)
    )


def test_layers_offloaded_to_disk_trace_the_same_rows(tiny_mixtral, corpus, in_memory, tmp_path):
    pytest.importorskip("accelerate")
    weights = (tiny_mixtral / "model.safetensors").stat().st_size
    offload = tmp_path / "offload"
    args = [
        "trace",
        str(tiny_mixtral),
        "--corpus",
        f"web={corpus}",
        "--out",
        str(tmp_path / "t"),
        "--seq-len",
        "16",
        "--batch-size",
        "3",
        "--shard-tokens",
        "60",
        "--weights-dtype",
        "float32",
        "--quiet",
        "--device-map",
        "sequential",
        "--max-memory",
        f"cpu={weights * 6 // 10}B",
        "--offload-folder",
        str(offload),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    offloaded = sorted(p.name for p in offload.iterdir())
    assert any(name.startswith("model.layers.") for name in offloaded), offloaded  # the layers did go to disk
    got = routelens.open_trace(tmp_path / "t")
    assert len(got.shards) == len(in_memory.shards) >= 2
    assert shard_rows(got) == shard_rows(in_memory)
    for key in ("totals", "identity", "moe_layers", "num_experts", "top_k"):
        assert got.manifest[key] == in_memory.manifest[key], key


def test_offload_without_a_folder_is_one_line(tiny_mixtral, corpus, tmp_path):
    pytest.importorskip("accelerate")
    args = [
        "trace",
        str(tiny_mixtral),
        "--corpus",
        f"web={corpus}",
        "--out",
        str(tmp_path / "t"),
        "-q",
        "--device-map",
        "auto",
        "--max-memory",
        "cpu=1KB",
    ]
    result = CliRunner().invoke(app, args)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "offload" in lines[0], result.output


def test_bad_max_memory_on_the_command_line_is_one_line(tiny_mixtral, corpus, tmp_path):
    args = [
        "trace",
        str(tiny_mixtral),
        "--corpus",
        f"web={corpus}",
        "--out",
        str(tmp_path / "t"),
        "-q",
        "--device-map",
        "auto",
        "--max-memory",
        "0=lots",
    ]
    result = CliRunner().invoke(app, args)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "'lots'" in lines[0], result.output
    assert not (tmp_path / "t").exists()


def test_an_actor_with_several_gpus_loads_a_device_map(tiny_mixtral, corpus, in_memory, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    from routelens.capture import describe_model
    from routelens.models.loading import load_skeleton
    from routelens.trace.plan import parse_specs
    from routelens.trace.ray_backend import ShardTracer, _plan_shards, actor_config

    config = TraceConfig(**SETTINGS)
    assert actor_config(config, 2).device_map is DeviceMap.AUTO and actor_config(config, 2).ray is None
    assert actor_config(config, 0).device == "cpu" and actor_config(config, 0).device_map is None
    specs = parse_specs([f"web={corpus}"])
    routing = describe_model(load_skeleton(str(tiny_mixtral), config)[0])
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    seen = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    offload = tmp_path / "offload"
    placed = TraceConfig(**SETTINGS, device_map="auto", offload_folder=str(offload))
    actor = ShardTracer(str(tiny_mixtral), routing, placed, specs, str(shard_dir), gpus=2)
    assert [kw.get("device_map") for kw in seen] == ["auto"]  # placed by accelerate, not .to(device)
    own = Path(seen[0]["offload_folder"])  # each actor offloads into a folder of its own
    assert own.parent == offload and own.name.startswith("actor-") and own.name.endswith(f"-{os.getpid()}")
    rows = list(
        _plan_shards(None, model=str(tiny_mixtral), config=config, specs=specs, shard_dir=str(shard_dir), done={})
    )
    for row in rows:
        out = actor(row)
        assert out["bytes"][0] == (shard_dir / f"part-{int(row['index'][0]):05d}.parquet").stat().st_size
    written = sorted(shard_dir.glob("part-*.parquet"))
    assert [p.name for p in written] == [p.name for p in in_memory.shards]
    assert [pq.read_table(p).to_pylist() for p in written] == shard_rows(in_memory)
    assert np.sum([r["rows"][0] for r in rows]) == in_memory.manifest["totals"]["tokens"]
