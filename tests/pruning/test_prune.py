"""`prune()` on saved tiny checkpoints of four families: the pruned checkpoint loads with
AutoModelForCausalLM, keeps the chosen experts' weights bit-equal and every other weight
unchanged, says N experts and top-min(k, N) in its config, and records only ids < N when traced."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import routelens
from routelens.errors import RoutelensError
from routelens.pruning import expert_importance, prune
from routelens.pruning.importance import scores_of
from tests.pruning.conftest import FAMILIES

LAYER = re.compile(r"layers\.(\d+)\.")


def _state(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_checkpoint_keeps_the_chosen_experts_bit_equal(family, traced_family, tmp_path):
    model_dir, trace = traced_family(family)
    record = prune(model_dir, trace, tmp_path / "pruned", keep=4, criterion="frequency", progress=False)
    saved = json.loads((tmp_path / "pruned" / "prune.json").read_text())
    assert saved == record and record["num_experts"] == 4 and record["top_k"] == 2
    # the kept experts are the four most frequent of each layer in the trace
    freq = scores_of(expert_importance(trace, progress=False), "frequency")
    for i, (_layer, ids) in enumerate(record["kept"].items()):
        assert sorted(np.argsort(-freq[i], kind="stable")[:4].tolist()) == ids or family == "deepseek_v3"
        assert len(ids) == 4 and ids == sorted(ids)
    if family == "deepseek_v3":  # two groups of four: two kept in each
        assert all(sum(e < 4 for e in ids) == 2 for ids in record["kept"].values())
    original, before = _state(model_dir)
    pruned, after = _state(tmp_path / "pruned")
    assert type(pruned) is type(original)
    text = pruned.config.get_text_config()
    assert (
        next(getattr(text, n) for n in ("num_local_experts", "n_routed_experts", "num_experts") if hasattr(text, n))
        == 4
    )
    assert set(after) == set(before)
    sliced = 0
    for name, tensor in before.items():
        if after[name].shape == tensor.shape:
            assert torch.equal(after[name], tensor), name  # attention, embeddings, shared experts...
            continue
        kept = record["kept"][LAYER.search(name).group(1)]
        axis = next(i for i, (a, b) in enumerate(zip(tensor.shape, after[name].shape)) if a != b)
        assert tensor.shape[axis] == 8 and after[name].shape[axis] == 4
        assert torch.equal(after[name], tensor.index_select(axis, torch.tensor(kept))), name
        sliced += 1
    moe_layers = len(record["kept"])
    assert sliced >= 3 * moe_layers  # router weight, gate_up_proj, down_proj per layer (+ biases)
    # the pruned model traces, with ids below N only
    src = trace.parent
    out = routelens.trace(
        tmp_path / "pruned", [f"code={src / 'code.txt'}"], tmp_path / "trace", seq_len=32, progress=False
    )
    chunk = out.load(["weights"])
    assert out.num_experts == 4 and int(chunk.experts.max()) < 4 and chunk.experts.shape[1:] == (moe_layers, 2)
    # ... and evaluates with `routelens eval`, under a capacity factor too
    from routelens.training.evaluate import evaluate

    scored = evaluate(
        tmp_path / "pruned", [f"code={src / 'code.txt'}"], capacity_factor=1.0, max_tokens=300, progress=False
    )
    assert scored["num_experts"] == 4 and scored["top_k"] == 2 and np.isfinite(scored["loss"])
    assert (
        scored["moe_layers"] == [int(layer) for layer in record["kept"]] and len(scored["dropped_share"]) == moe_layers
    )


def test_keep_one_lowers_top_k_and_random_is_seeded(traced_family, tmp_path):
    model_dir, trace = traced_family("mixtral")
    one = prune(model_dir, trace, tmp_path / "one", keep=1, criterion="weighted", progress=False)
    assert one["top_k"] == 1 and one["config_changes"]["num_experts_per_tok"] == [2, 1]
    with torch.no_grad():
        model, _ = _state(tmp_path / "one")
        assert torch.isfinite(model(input_ids=torch.tensor([[3, 4, 5]])).logits).all()
    a = prune(model_dir, trace, tmp_path / "a", drop_fraction=0.5, criterion="random", seed=1, progress=False)
    b = prune(model_dir, trace, tmp_path / "b", drop_fraction=0.5, criterion="random", seed=1, progress=False)
    c = prune(model_dir, trace, tmp_path / "c", drop_fraction=0.5, criterion="random", seed=2, progress=False)
    assert a["kept"] == b["kept"] != c["kept"] and a["num_experts"] == 4


def test_bad_requests_are_refused_in_one_line(traced_family, tmp_path):
    model_dir, trace = traced_family("mixtral")
    _, other_trace = traced_family("olmoe")
    cases = [
        (dict(keep=9), "outside 1..8"),
        (dict(keep=0), "at least 1"),
        (dict(keep=4, drop_fraction=0.5), "exactly one of"),
        (dict(keep=4, criterion="magic"), "criterion 'magic' is unknown"),
        (dict(keep=4, criterion="reap"), "--store-expert-norms"),
        (dict(keep=4, domain="poetry"), "not a domain"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RoutelensError, match=re.escape(message)):
            prune(model_dir, trace, tmp_path / "x", progress=False, **kwargs)
    with pytest.raises(RoutelensError, match="another model"):
        prune(model_dir, other_trace, tmp_path / "x", keep=4, progress=False)
    ds_model, ds_trace = traced_family("deepseek_v3")
    with pytest.raises(RoutelensError, match="multiple of 2"):
        prune(ds_model, ds_trace, tmp_path / "x", keep=3, progress=False)
    assert not (tmp_path / "x").exists()  # nothing written by a refused run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(RoutelensError, match="--overwrite"):
        prune(model_dir, trace, tmp_path / "full", keep=4, progress=False)
