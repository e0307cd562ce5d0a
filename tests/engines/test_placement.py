"""`export placement`: equal-slot placements that the engines' own loaders accept, with a device
balance no worse than the engines' default layout on the same trace."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from routelens import RoutelensError, open_trace
from routelens.engines.export import expert_load
from routelens.engines.placement import PlacementConfig, export_placement, place_layer

VLLM_ASCEND = "vllm-project/vllm-ascend@182b75ea84ff13ece27b57391331ef8935410aea"
SGLANG = "sgl-project/sglang@01fec5c2e61f9568c41a6e1d4fd5ac46c88504f1"


def vllm_ascend_loads(path, n_experts: int, ep_size: int, moe_layers: int) -> list[np.ndarray]:
    """What vllm-ascend does with expert_map_path, as read at VLLM_ASCEND:
    vllm_ascend/eplb/core/eplb_utils.py `expert_file_to_tensor` (layer_list read by position,
    physical count = all device_expert lengths, torch.tensor(int32) of the device lists: ragged
    fails) and `init_eplb_config` (n_redundant = physical - n_experts; for rankid in range(ep_size)
    `expert_map[local_placement] = arange`: an id >= n_experts raises, a negative one wraps, a
    duplicate on one device silently overwrites); vllm_ascend/ops/fused_moe/routed_experts.py
    `init_eplb` (local capacity must be (num_experts + redundant) / ep_size). Stricter here: no
    negative id, no duplicate on a device, every logical expert placed. Returns each MoE layer's
    (devices, slots) placement."""
    data = json.loads(path.read_text())
    assert data["moe_layer_count"] == moe_layers and len(data["layer_list"]) == moe_layers
    out = []
    for layer_id in range(moe_layers):
        devices = [d["device_expert"] for d in data["layer_list"][layer_id]["device_list"]]
        placement = np.array(devices, dtype=np.int32)  # ragged -> error, as torch.tensor
        assert placement.ndim == 2 and placement.shape[0] >= ep_size
        physical = sum(len(d) for d in devices)
        redundant = physical - n_experts
        assert redundant >= 0
        assert placement.shape[1] == (n_experts + redundant) // ep_size and (n_experts + redundant) % ep_size == 0
        for rank in range(ep_size):
            local = placement[rank]
            assert ((local >= 0) & (local < n_experts)).all()
            assert len(set(local.tolist())) == len(local)
        assert set(placement[:ep_size].ravel().tolist()) == set(range(n_experts))
        out.append(placement[:ep_size])
    return out


def sglang_loads(path, n_logical: int, ep_size: int, num_layers: int, redundant: int) -> np.ndarray:
    """What SGLang does with --init-expert-location FILE.json, as read at SGLANG:
    python/sglang/srt/eplb/expert_location.py `compute_initial_expert_location_metadata` (a dict
    with physical_to_logical_map goes to `init_by_mapping`; other keys make it fail),
    `_init_common` (num_physical divisible by ep_size), `_compute_logical_to_all_physical_map`
    (indexes by logical id: >= num_logical raises, negative wraps), `_fair_choices` (a logical
    expert without a slot divides by zero under static dispatch). Rows: one per model layer."""
    data = json.loads(path.read_text())
    assert set(data) == {"physical_to_logical_map"}
    p2l = np.array(data["physical_to_logical_map"], dtype=np.int64)
    assert p2l.shape == (num_layers, n_logical + redundant)
    assert p2l.shape[1] % ep_size == 0
    assert ((p2l >= 0) & (p2l < n_logical)).all()
    for row in p2l:
        assert set(row.tolist()) == set(range(n_logical))
        for dev in row.reshape(ep_size, -1):
            assert len(set(dev.tolist())) == len(dev)
    return p2l


def device_balance(counts: np.ndarray, devices: np.ndarray) -> float:
    """max / mean device load of one layer's (devices, slots) placement, tokens split evenly over replicas."""
    replicas = np.bincount(devices.ravel(), minlength=len(counts))
    load = np.array([sum(counts[e] / replicas[e] for e in dev) for dev in devices])
    return float(load.max() / load.mean())


@pytest.mark.parametrize("devices, redundant", [(4, 0), (4, 4), (2, 2), (8, 8)])
def test_vllm_ascend_placement_passes_its_loader_and_beats_the_default(mixtral_trace, tmp_path, devices, redundant):
    tr = open_trace(mixtral_trace)
    E = tr.num_experts
    out = tmp_path / "expert_map.json"
    placed = export_placement(tr, out, devices=devices, redundant=redundant, format="vllm-ascend", progress=False)
    layers = vllm_ascend_loads(out, E, devices, len(tr.layers))
    counts = expert_load(tr)
    for layer, (row, placement) in enumerate(zip(counts, layers)):
        got = device_balance(row, placement)
        assert got == pytest.approx(placed.balance[layer])  # the balance printed is the file's
        # vllm-ascend's own layout without a map: all experts in order, then copies of 0..R-1
        default = np.r_[np.arange(E), np.arange(redundant) % E].reshape(devices, -1)
        assert got <= device_balance(row, default) + 1e-9


def test_sglang_placement_passes_its_loader_with_a_row_per_decoder_layer(dense_trace, tmp_path):
    tr, hidden = dense_trace
    out = tmp_path / "placement.json"
    export_placement(tr, out, devices=2, redundant=2, format="sglang", progress=False)
    p2l = sglang_loads(out, tr.num_experts, 2, hidden, 2)
    counts = expert_load(tr)
    for slot, layer in enumerate(tr.layers):
        assert (
            device_balance(counts[slot], p2l[layer].reshape(2, -1))
            <= device_balance(counts[slot], np.arange(tr.num_experts).reshape(2, -1)) + 1e-9
        )


@pytest.fixture
def dense_trace(dense_model, mixtral_trace, tmp_path):
    """The Mixtral trace's routing imported for a model whose decoder layer 1 is dense."""
    from routelens.engines import import_engine
    from tests.engines.conftest import documents, write_vllm_jsonl

    src = write_vllm_jsonl(tmp_path / "v.jsonl", documents(mixtral_trace), pad_layers=[1])
    return import_engine("vllm", src, dense_model, tmp_path / "t", progress=False), 3


def test_placement_is_near_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        load = rng.integers(1, 100, 6).astype(float)
        held, balance = place_layer(load, 3, 0)
        best = min(max(sum(load[list(p[i : i + 2])]) for i in (0, 2, 4)) for p in itertools.permutations(range(6)))
        assert sorted(sum(held, [])) == list(range(6)) and all(len(h) == 2 for h in held)
        ours = max(sum(load[h]) for h in held)
        assert ours == pytest.approx(balance * load.sum() / 3)
        assert ours <= best * 4 / 3 + 1e-9


def test_redundant_slots_go_to_the_hottest_expert():
    held, balance = place_layer(np.array([90.0, 10, 10, 10]), 2, 2)
    assert sum(h.count(0) for h in held) == 2  # expert 0 on both devices
    assert balance < 90 / 60  # better than without replicas


def test_slots_that_do_not_divide_are_refused_in_one_line(mixtral_trace, tmp_path):
    with pytest.raises(RoutelensError, match=r"--devices 3 does not divide the 8 experts \+ 0 redundant") as err:
        export_placement(mixtral_trace, tmp_path / "p.json", devices=3, progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "p.json").exists()
    with pytest.raises(RoutelensError, match="--format"):
        PlacementConfig(format="deepep")


def test_cli_prints_the_balance(mixtral_trace, tmp_path):
    from typer.testing import CliRunner

    from routelens.cli.main import app

    out = tmp_path / "p.json"
    run = CliRunner().invoke(
        app,
        [
            "export",
            "placement",
            str(mixtral_trace),
            "--devices",
            "4",
            "--redundant",
            "4",
            "--format",
            "sglang",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert run.exit_code == 0, run.output
    assert "balance (max / mean device load)" in run.output and out.is_file()
    bad = CliRunner().invoke(
        app, ["export", "placement", str(mixtral_trace), "--devices", "3", "--out", str(out), "-q"]
    )
    assert bad.exit_code == 2 and "does not divide" in bad.output
