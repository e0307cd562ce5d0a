"""Evaluation: routing-health metrics on planted routing, `evaluate` against the model's own loss,
capacity drops through `routelens eval`, and `routelens train` on the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from routelens.errors import RoutelensError
from routelens.training.evaluate import EvalConfig, evaluate, first_expert_repeat_rate, max_load_ratio, routing_health
from routelens.training.train import train
from tests.training.test_train import MICRO, write_micro_corpus


def test_max_load_ratio_planted():
    E, n = 4, 400
    uniform = np.stack([np.arange(n) % E, (np.arange(n) + 1) % E], axis=1)[:, None, :]  # (n, 1, 2)
    assert max_load_ratio(uniform, E) == pytest.approx([1.0])
    collapsed = np.zeros((n, 2, 1), np.int64)  # top-1, every token on expert 0, two layers
    assert max_load_ratio(collapsed, E) == pytest.approx([E, E])
    half = np.where(np.arange(n) % 2 == 0, 0, np.arange(n) % 3 + 1)[:, None, None]  # expert 0 takes half
    assert max_load_ratio(half, E) == pytest.approx([0.5 * E])


def test_first_expert_repeat_rate_planted():
    # layer 0 always repeats, layer 1 never; the pair across a padding position does not count
    first = np.stack([np.zeros((2, 5), np.int64), np.tile(np.arange(5) % 2, (2, 1))], axis=-1)  # (2, 5, 2)
    valid = np.ones((2, 5), bool)
    assert first_expert_repeat_rate(first, valid) == pytest.approx([1.0, 0.0])
    valid[1, 3:] = False  # 4 + 2 valid pairs
    assert first_expert_repeat_rate(first, valid) == pytest.approx([1.0, 0.0])
    rng = np.random.default_rng(0)
    random = rng.integers(0, 8, size=(50, 200, 1))
    assert first_expert_repeat_rate(random, np.ones((50, 200), bool))[0] == pytest.approx(1 / 8, abs=0.01)


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    specs = write_micro_corpus(root / "corpus")
    out = train(specs, root / "model", MICRO, progress=False, steps=4, checkpoint_every=2)
    return out, specs


def test_evaluate_equals_the_models_own_loss(micro_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, specs = micro_model
    result = evaluate(out, specs[:1], EvalConfig(seq_len=16, batch_size=64, max_tokens=160, progress=False))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    from routelens.corpus import iter_documents, parse_corpus_spec

    ids = []
    for doc in iter_documents(parse_corpus_spec(specs[0])):
        ids.extend(tok(doc.text)["input_ids"] + [tok.eos_token_id])  # <s> text </s>, documents packed
    stream = torch.tensor(ids[:160]).view(10, 16)  # 160 tokens = 10 full windows
    with torch.no_grad():
        logits = model(input_ids=stream).logits
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), stream[:, 1:].flatten()).item()
    got = result["domains"]["code"]
    assert got["tokens"] == 10 * 15
    assert got["loss"] == pytest.approx(want, rel=1e-4) and got["perplexity"] == pytest.approx(math.exp(want), rel=1e-4)
    assert result["dropped_share"] == [0.0, 0.0] and result["capacity_factor"] is None


def test_routing_health_keys_and_bounds(micro_model):
    out, specs = micro_model
    health = routing_health(out, specs, max_tokens=500)
    assert health["num_experts"] == 4 and health["top_k"] == 2 and health["layers"] == [0, 1]
    assert all(1.0 <= r <= 4 / 2 + 1e-9 for r in health["max_load_ratio"])  # k=2 of 4: one expert holds <= half
    assert all(0.0 <= r <= 1.0 for r in health["first_repeat_rate"]) and health["random_repeat_rate"] == 0.25
    assert health["balanced"] == all(r <= 2.0 for r in health["max_load_ratio"])


def test_eval_errors_are_user_errors(micro_model, tmp_path):
    _, specs = micro_model
    with pytest.raises(RoutelensError, match="no config.json"):
        evaluate(tmp_path, specs)
    with pytest.raises(
        RoutelensError, match="unknown option 'top' for EvalConfig; valid options are capacity_factor, top_k"
    ):
        evaluate(tmp_path, specs, top=1)


# ---- every family routelens records ------------------------------------------------------------
EVAL_FAMILIES = ["olmoe", "qwen2_moe", "deepseek_v3"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """(saved tiny model of each family, with a tokenizer; a one-domain corpus spec)."""
    from tests.conftest import SAMPLE_TEXT
    from tests.pruning.conftest import save_tiny

    root = tmp_path_factory.mktemp("eval-families")
    (root / "prose.txt").write_text("\n\n".join(SAMPLE_TEXT * 3))
    return {family: save_tiny(root / family, family) for family in EVAL_FAMILIES}, f"prose={root / 'prose.txt'}"


def _hand_loss(model_dir, spec: str, tokens: int, seq_len: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from routelens.corpus import iter_documents, parse_corpus_spec

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = []
    for doc in iter_documents(parse_corpus_spec(spec)):
        ids.extend(tok(doc.text)["input_ids"] + [tok.eos_token_id])
    stream = torch.tensor(ids[:tokens]).view(-1, seq_len)
    with torch.no_grad():
        logits = model(input_ids=stream).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), stream[:, 1:].flatten()).item()


@pytest.mark.parametrize("family", EVAL_FAMILIES)
def test_evaluate_any_family(family_dirs, family):
    dirs, spec = family_dirs
    config = dict(seq_len=16, batch_size=4, max_tokens=128, progress=False)
    free = evaluate(dirs[family], [spec], **config)
    assert free["domains"]["prose"]["tokens"] == 8 * 15
    assert free["loss"] == pytest.approx(_hand_loss(dirs[family], spec, 128, 16), rel=1e-4)
    layers = [1, 2] if family == "deepseek_v3" else [0, 1]
    assert free["num_experts"] == 8 and free["top_k"] == 2 and free["moe_layers"] == layers
    assert free["dropped_share"] == [0.0, 0.0]
    huge = evaluate(dirs[family], [spec], **config, capacity_factor=1e6)
    assert huge["loss"] == free["loss"] and huge["dropped_share"] == [0.0, 0.0]
    tight = evaluate(dirs[family], [spec], **config, capacity_factor=0.5)
    # half the slots balanced routing needs: at least half of the assignments cannot fit
    assert all(d >= 0.5 - 1e-9 for d in tight["dropped_share"]) and tight["loss"] != free["loss"]
    top1 = evaluate(dirs[family], [spec], **config, top_k=1)
    assert top1["top_k"] == 1 and top1["loss"] != free["loss"] and top1["dropped_share"] == [0.0, 0.0]


def test_routing_health_any_family(family_dirs):
    dirs, spec = family_dirs
    health = routing_health(dirs["deepseek_v3"], [spec], max_tokens=200)
    assert health["layers"] == [1, 2] and health["num_experts"] == 8 and health["top_k"] == 2
    assert all(1.0 <= r <= 8 / 2 + 1e-9 for r in health["max_load_ratio"]) and health["random_repeat_rate"] == 1 / 8
    assert health["tokens"] > 0 and all(0.0 <= r <= 1.0 for r in health["first_repeat_rate"])


def test_record_routing_reads_the_experts_inputs_best_first(family_dirs):
    """DeepSeek-V3 takes its top-k unsorted: what record_routing returns is the same set, first choice first."""
    from routelens.training.evaluate import load_model_dir, record_routing

    model, _, _ = load_model_dir(family_dirs[0]["deepseek_v3"])
    seen = []
    hooks = [
        layer.mlp.experts.register_forward_pre_hook(lambda m, args: seen.append((args[1].clone(), args[2].clone())))
        for layer in model.model.layers[1:]
    ]
    try:
        with torch.no_grad(), record_routing(model) as routed:
            model(input_ids=torch.randint(3, 300, (2, 7)))
    finally:
        for h in hooks:
            h.remove()
    assert [len(r) for r in routed] == [1, 1]
    for (index, weights), got in zip(seen, (r[0] for r in routed)):
        want = index.gather(1, weights.argsort(dim=1, descending=True, stable=True))
        assert torch.equal(got, want)


def test_window_nll_per_window_sums_to_the_total():
    from routelens.models.loss import window_nll
    from tests.pruning.conftest import tiny_model

    model = tiny_model("mixtral")
    rng = np.random.default_rng(0)
    windows = rng.integers(3, 300, (5, 12))
    windows[4, 7:] = -1  # a padded last window: its padding predicts nothing
    parts: list[np.ndarray] = []
    with torch.no_grad():
        total, count = window_nll(model, windows, 2, 0, per_window=parts)
        rows = np.concatenate(parts)
        assert rows.shape == (5, 2) and rows[:, 1].tolist() == [11, 11, 11, 11, 6] and count == 50
        assert rows[:, 0].sum() == pytest.approx(total, rel=1e-6)
        # one window alone gives its own row's NLL
        alone, n = window_nll(model, windows[4:5], 1, 0)
    assert n == 6 and rows[4, 0] == pytest.approx(alone, rel=1e-5)
