"""Evaluation: routing-health metrics on planted routing, `evaluate` against the model's own loss,
capacity drops through `routelens eval`, and `routelens train` on the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from routelens.cli.main import app
from routelens.errors import RoutelensError
from routelens.training.evaluate import EvalConfig, evaluate, first_expert_repeat_rate, max_load_ratio, routing_health
from tests.training.test_train import write_micro_corpus


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
    out = root / "model"
    result = CliRunner().invoke(
        app, ["train", *sum((["--corpus", s] for s in specs), []), "--out", str(out), "--experts", "4", "--top-k", "2",
              "--layers", "2", "--hidden", "32", "--heads", "2", "--seq-len", "32", "--batch-size", "4", "--steps", "4",
              "--checkpoint-every", "2", "--vocab-size", "300", "--val-tokens", "200", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, specs


def test_train_cli_writes_a_loadable_model(micro_model):
    out, _ = micro_model
    meta = json.loads((out / "training.json").read_text())
    assert meta["steps"] == 4 and meta["config"]["experts"] == 4 and meta["checkpoints"] == ["step-000002", "step-000004"]


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


def test_eval_cli_capacity_drops_and_json(micro_model, tmp_path):
    out, specs = micro_model
    args = ["eval", str(out), *sum((["--corpus", s] for s in specs), []), "--max-tokens", "400", "--quiet"]
    free = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "free.json")])
    tight = CliRunner().invoke(app, [*args, "--capacity-factor", "0.25", "--top-k", "1", "--json", str(tmp_path / "cf.json")])
    assert free.exit_code == 0 and tight.exit_code == 0, free.output + tight.output
    assert "perplexity" in free.output and "dropped by capacity" in tight.output
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("free.json", "cf.json"))
    assert set(a["domains"]) == {"code", "prose"} and a["top_k"] == 2 and b["top_k"] == 1
    # CF 0.25 of top-1 leaves room for a quarter of the assignments: at least 3/4 dropped
    assert all(d >= 0.75 - 1e-9 for d in b["dropped_share"]) and all(d == 0 for d in a["dropped_share"])
    assert b["fully_dropped_share"] == pytest.approx(b["dropped_share"])  # top-1: a dropped assignment is the token
    assert b["loss"] != a["loss"]


def test_routing_health_keys_and_bounds(micro_model):
    out, specs = micro_model
    health = routing_health(out, specs, max_tokens=500)
    assert health["num_experts"] == 4 and health["top_k"] == 2 and health["layers"] == [0, 1]
    assert all(1.0 <= r <= 4 / 2 + 1e-9 for r in health["max_load_ratio"])  # k=2 of 4: one expert holds <= half
    assert all(0.0 <= r <= 1.0 for r in health["first_repeat_rate"]) and health["random_repeat_rate"] == 0.25
    assert health["balanced"] == all(r <= 2.0 for r in health["max_load_ratio"])


def test_eval_errors_are_one_line(micro_model, tmp_path):
    out, specs = micro_model
    with pytest.raises(RoutelensError, match="no config.json"):
        evaluate(tmp_path, specs)
    result = CliRunner().invoke(app, ["eval", str(out), "--corpus", specs[0], "--capacity-factor", "0", "--quiet"])
    assert result.exit_code == 2 and "capacity factor 0" in result.output and "Traceback" not in result.output
