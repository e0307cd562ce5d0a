"""Training: balance and z losses against closed forms and transformers' reference, a micro model
trained end to end (loadable, checkpoints, training.json), resume after a kill equal to an
uninterrupted run, --init, and the errors a user can hit."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

import routelens.training.train as train_mod
from routelens.errors import RoutelensError
from routelens.training.train import BalanceLoss, TrainConfig, balance_loss, lr_at, router_z_loss, train
from tests.conftest import SAMPLE_TEXT, save_tiny_model, tiny_mixtral_config

MICRO = TrainConfig(
    num_experts=4,
    top_k=2,
    num_layers=2,
    hidden=32,
    heads=2,
    seq_len=32,
    batch_size=4,
    steps=6,
    warmup_steps=2,
    checkpoint_every=2,
    vocab_size=300,
    val_tokens=200,
)


def write_micro_corpus(root, docs: int = 40) -> list[str]:
    """Two small corpora of distinct styles; returns their SPECs."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    code = [f"def f{i}(x):\n    return x * {rng.integers(100)} + {SAMPLE_TEXT[0].split()[1]!r}" for i in range(docs)]
    prose = [" ".join(rng.permutation(SAMPLE_TEXT[1].split() + SAMPLE_TEXT[4].split())) for _ in range(docs)]
    specs = []
    for name, texts in (("code", code), ("prose", prose)):
        (root / f"{name}.txt").write_text("\n\n".join(texts) + "\n")
        specs.append(f"{name}={root / f'{name}.txt'}")
    return specs


def _one_hot_logits(pairs: list[tuple[int, int]], num_experts: int, scale: float = 20.0) -> torch.Tensor:
    logits = torch.zeros(len(pairs), num_experts)
    for t, (a, b) in enumerate(pairs):
        logits[t, a], logits[t, b] = scale, scale - 1
    return logits


def _balance_reference(layers: list[torch.Tensor], k: int, pooled: bool) -> float:
    """Loops: f = share of top-k assignments, P = mean probability; E * sum f P."""
    E = layers[0].shape[1]
    groups = [torch.cat(layers)] if pooled else layers
    total = 0.0
    for logits in groups:
        probs = torch.softmax(logits, -1)
        counts = [0] * E
        for row in probs:
            for e in torch.topk(row, k).indices.tolist():
                counts[e] += 1
        total += E * sum(counts[e] / (len(probs) * k) * probs[:, e].mean().item() for e in range(E))
    return total


def test_balance_loss_planted_and_reference():
    E = 8
    balanced = _one_hot_logits([(t % E, (t + 1) % E) for t in range(64)], E)
    collapsed_a = _one_hot_logits([(0, 1)] * 64, E)
    collapsed_b = _one_hot_logits([(2, 3)] * 64, E)
    # perfectly balanced assignments and mean probabilities: exactly 1 per layer
    assert balance_loss([balanced, balanced], 2).item() == pytest.approx(2.0, abs=1e-5)
    # everything on experts {0, 1}: f = (1/2, 1/2), P ~ (0.73, 0.27): E * 0.5 * 1 ~ 4
    assert balance_loss([collapsed_a], 2).item() == pytest.approx(E * 0.5 * 1.0, rel=1e-3)
    # two layers collapsed on different experts: pooling hides half of it, per layer does not
    layers = [collapsed_a, collapsed_b]
    per_layer = balance_loss(layers, 2, BalanceLoss.PER_LAYER).item()
    pooled = balance_loss(layers, 2, BalanceLoss.POOLED).item()
    assert per_layer == pytest.approx(_balance_reference(layers, 2, pooled=False), rel=1e-5)
    assert pooled == pytest.approx(_balance_reference(layers, 2, pooled=True), rel=1e-5)
    assert per_layer / 2 == pytest.approx(2 * pooled, rel=1e-3)


def test_pooled_balance_equals_transformers_divided_by_k():
    torch.manual_seed(0)
    layers = tuple(torch.randn(50, 8) * 2 for _ in range(3))
    for k in (1, 2, 3):
        hf = load_balancing_loss_func(layers, 8, k)
        assert balance_loss(layers, k, BalanceLoss.POOLED).item() * k == pytest.approx(hf.item(), rel=1e-5)


def test_z_loss_closed_form():
    assert router_z_loss([torch.zeros(5, 8), torch.zeros(3, 8)]).item() == pytest.approx(2 * math.log(8) ** 2)
    logits = torch.tensor([[0.0, math.log(3.0)]])  # logsumexp = log 4
    assert router_z_loss([logits]).item() == pytest.approx(math.log(4.0) ** 2)


def test_lr_schedule():
    cfg = dataclasses.replace(MICRO, steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(cfg, 0, 0) == pytest.approx(0.1) and lr_at(cfg, 9, 0) == pytest.approx(1.0)
    assert lr_at(cfg, 10, 0) == pytest.approx(1.0) and lr_at(cfg, 100, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 55, 0) == pytest.approx(0.55)
    timed = dataclasses.replace(cfg, steps=None, minutes=1.0)
    assert lr_at(timed, 50, 30.0) == pytest.approx(0.55)


def test_train_micro_model_end_to_end(tmp_path):
    specs = write_micro_corpus(tmp_path / "corpus")
    out = train(specs, tmp_path / "m", dataclasses.replace(MICRO, steps=8, lr=1e-2), progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.config.num_local_experts == 4 and model.config.num_experts_per_tok == 2 and len(tok) == 300
    meta = json.loads((out / "training.json").read_text())
    assert meta["steps"] == 8 and meta["tokens"] == 8 * 4 * 32
    assert (
        meta["config"]["num_experts"] == 4
        and meta["config"]["num_layers"] == 2
        and set(meta["val"]) == {"code", "prose"}
    )
    assert meta["config"]["experts"] == 4 and meta["config"]["layers"] == 2  # the earlier keys, still written
    for v in meta["val"].values():
        assert (
            v["tokens"] > 0
            and v["loss"] > 0
            and v["unigram_loss"] > 0
            and v["domain_unigram_loss"] <= v["unigram_loss"] + 1e-9
        )
    assert meta["checkpoints"] == ["step-000002", "step-000004", "step-000006", "step-000008"]
    losses = [h["loss"] for h in meta["history"]]
    assert min(losses[-3:]) < losses[0] - 0.05  # learning happened within 8 steps
    # only the newest checkpoint keeps optimizer state; each one is a loadable HF checkpoint
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [(c / "optimizer.pt").exists() for c in ckpts] == [False, False, False, True]
    mid = AutoModelForCausalLM.from_pretrained(ckpts[0])
    assert not torch.equal(mid.model.layers[0].mlp.gate.weight, model.model.layers[0].mlp.gate.weight)
    # a finished directory is returned as is
    stamp = (out / "training.json").stat().st_mtime_ns
    assert train(specs, out, dataclasses.replace(MICRO, steps=8, lr=1e-2), progress=False) == out
    assert (out / "training.json").stat().st_mtime_ns == stamp


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, monkeypatch):
    specs = write_micro_corpus(tmp_path / "corpus")
    full = train(specs, tmp_path / "full", MICRO, progress=False)

    real_save = train_mod._save_checkpoint

    def save_then_die(root, model, tokenizer, optimizer, state, keep):
        path = real_save(root, model, tokenizer, optimizer, state, keep)
        if state["step"] == 4:
            raise KeyboardInterrupt  # the process is killed right after the step-4 checkpoint
        return path

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(specs, tmp_path / "resumed", MICRO, progress=False)
    assert not (tmp_path / "resumed" / "training.json").exists()
    monkeypatch.setattr(train_mod, "_save_checkpoint", real_save)
    resumed = train(specs, tmp_path / "resumed", MICRO, progress=False)

    a = AutoModelForCausalLM.from_pretrained(full).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta_a, meta_b = (json.loads((p / "training.json").read_text()) for p in (full, resumed))
    assert meta_a["steps"] == meta_b["steps"] == 6 and meta_a["tokens"] == meta_b["tokens"]
    assert meta_a["val"] == meta_b["val"]
    # resuming with other settings is refused, naming them
    with pytest.raises(RoutelensError, match="lr="):
        train(specs, tmp_path / "resumed", dataclasses.replace(MICRO, lr=0.1), progress=False)


def test_init_from_mixtral_dir_and_capacity_training(tmp_path):
    specs = write_micro_corpus(tmp_path / "corpus")
    init = save_tiny_model(tmp_path / "init", tiny_mixtral_config(hidden_size=32, num_local_experts=4))
    before = AutoModelForCausalLM.from_pretrained(init).state_dict()
    cfg = dataclasses.replace(MICRO, steps=2, init=str(init), capacity_factor=1.0)
    out = train(specs, tmp_path / "ft", cfg, progress=False)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert after.config.num_local_experts == 4 and after.config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(init).get_vocab()
    # trained from the init weights: small moves, not a fresh initialisation
    w0, w1 = before["model.embed_tokens.weight"], after.state_dict()["model.embed_tokens.weight"]
    assert not torch.equal(w0, w1) and (w1 - w0).abs().max() < 0.1
    assert json.loads((out / "training.json").read_text())["config"]["capacity_factor"] == 1.0


def test_user_errors(tmp_path):
    specs = write_micro_corpus(tmp_path / "corpus")
    with pytest.raises(RoutelensError, match="top-k 5"):
        TrainConfig(num_experts=4, top_k=5)
    with pytest.raises(RoutelensError, match="hidden 30"):
        TrainConfig(hidden=30, heads=4)
    with pytest.raises(RoutelensError, match="--steps N or --minutes M"):
        TrainConfig(steps=None, minutes=None)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(RoutelensError, match="not empty"):
        train(specs, busy, MICRO, progress=False)
    with pytest.raises(RoutelensError, match="no config.json"):
        train(specs, tmp_path / "x", dataclasses.replace(MICRO, init=str(tmp_path / "nowhere")), progress=False)
    with pytest.raises(RoutelensError, match="repeat"):
        train([specs[0], specs[0]], tmp_path / "y", MICRO, progress=False)
    with pytest.raises(RoutelensError, match="unknown option 'experts' for TrainConfig; valid options are num_experts"):
        train(specs, tmp_path / "z", MICRO, progress=False, experts=4)


def test_a_config_saved_under_the_earlier_names_is_the_same_run():
    saved = json.loads(json.dumps(MICRO.to_json()))
    old = {k: v for k, v in saved.items() if k not in ("num_experts", "num_layers")}  # as written before the rename
    assert old["experts"] == 4 and old["layers"] == 2
    assert MICRO.differences(old) == [] and MICRO.differences(saved) == []
    other = dataclasses.replace(MICRO, num_experts=8)
    assert other.differences(old) == ["num_experts"]
