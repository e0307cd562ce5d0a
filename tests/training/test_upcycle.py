"""Sparse upcycling of tiny dense checkpoints built in the test: exactness of copy, the sum identity
of split, loadability, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)
from transformers.models.llama.modeling_llama import LlamaMLP
from transformers.models.mixtral.modeling_mixtral import MixtralExperts

from routelens.errors import RoutelensError
from routelens.training.upcycle import (
    UpcycleConfig,
    UpcycleMode,
    expert_weights,
    mixtral_config,
    upcycle,
)
from tests.conftest import save_tiny_model

SHAPES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return model(ids).logits, model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("dense") / "llama", LlamaConfig(**SHAPES))


@pytest.mark.parametrize(
    "config",
    [LlamaConfig(**SHAPES, tie_word_embeddings=True), MistralConfig(**SHAPES, sliding_window=8)],
    ids=["llama_tied", "mistral_sliding_window"],
)
def test_copy_mode_reproduces_the_dense_logits(tmp_path, config):
    dense_dir = save_tiny_model(tmp_path / "dense", config)
    out = upcycle(dense_dir, tmp_path / "moe", num_experts=4, top_k=2, mode="copy", seed=3)
    ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    dense_logits, _ = _logits(dense_dir, ids)
    moe_logits, moe = _logits(out, ids)
    assert type(moe).__name__ == "MixtralForCausalLM"
    assert moe.config.num_local_experts == 4 and moe.config.num_experts_per_tok == 2
    assert moe.config.sliding_window == getattr(config, "sliding_window", None)
    torch.testing.assert_close(moe_logits, dense_logits, rtol=1e-5, atol=1e-5)
    # the router is fresh (not zero, not uniform), so the equality is not an artefact of a dead router
    router = moe.model.layers[0].mlp.gate.weight
    assert router.std() > 0.005 and router.abs().max() < 0.2
    experts = moe.model.layers[0].mlp.experts
    assert torch.equal(experts.gate_up_proj[0], experts.gate_up_proj[3])


def test_copy_output_is_a_complete_loadable_checkpoint(llama_dir, tmp_path):
    out = upcycle(llama_dir, tmp_path / "moe", num_experts=8, top_k=2, mode=UpcycleMode.COPY)
    assert {"config.json", "tokenizer.json", "upcycle.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed away
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("Question: Solve").input_ids == AutoTokenizer.from_pretrained(llama_dir)("Question: Solve").input_ids
    text = (out / "upcycle.json").read_text()
    record = json.loads(text)
    assert text == json.dumps(record, indent=2) + "\n"  # written by atomic.write_json in its old format
    assert record["experts"] == 8 and record["mode"] == "copy" and record["source_model_type"] == "llama"
    assert record["num_experts"] == 8  # today's name beside the earlier key
    # same seed -> same routers; another seed -> other routers
    again = upcycle(llama_dir, tmp_path / "again", num_experts=8, top_k=2, mode="copy")
    other = upcycle(llama_dir, tmp_path / "other", num_experts=8, top_k=2, mode="copy", seed=1)
    weights = [AutoModelForCausalLM.from_pretrained(p).model.layers[1].mlp.gate.weight for p in (out, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_split_experts_sum_to_the_dense_ffn():
    """All E experts with weight 1 = the dense FFN, checked on the modules transformers runs."""
    torch.manual_seed(0)
    dense_config = LlamaConfig(**SHAPES)
    mlp = LlamaMLP(dense_config)
    cfg = UpcycleConfig(num_experts=4, top_k=2, mode="split", seed=5)
    experts = MixtralExperts(mixtral_config(dense_config, cfg, intermediate_size=64 // 4))
    gate_up, down = expert_weights(
        mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight, cfg, torch.Generator().manual_seed(5)
    )
    assert gate_up.shape == (4, 2 * 16, 32) and down.shape == (4, 32, 16)  # (E, 2I/E, H), (E, H, I/E)
    with torch.no_grad():
        experts.gate_up_proj.copy_(gate_up)
        experts.down_proj.copy_(down)
        x = torch.randn(10, 32)
        every = torch.arange(4).expand(10, 4)  # (tokens, E): every token to every expert
        summed = experts(x, every, torch.ones(10, 4))
        torch.testing.assert_close(summed, mlp(x), rtol=1e-5, atol=1e-6)
        # each expert alone is a strict part of the FFN, and the parts are disjoint in neurons
        one = experts(x, torch.zeros(10, 1, dtype=torch.long), torch.ones(10, 1))
        assert not torch.allclose(one, mlp(x), atol=1e-4)
    rows = {tuple(r.tolist()) for e in range(4) for r in gate_up[e, :16]}
    assert rows == {tuple(r.tolist()) for r in mlp.gate_proj.weight}  # a permutation of the dense neurons


def test_split_checkpoint_loads_and_top_k_is_not_the_dense_model(llama_dir, tmp_path):
    out = upcycle(llama_dir, tmp_path / "split", num_experts=4, top_k=2, mode="split")
    ids = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(1))
    moe_logits, moe = _logits(out, ids)
    dense_logits, _ = _logits(llama_dir, ids)
    assert moe.config.intermediate_size == 16 and moe.model.layers[0].mlp.experts.down_proj.shape == (4, 32, 16)
    assert not torch.allclose(moe_logits, dense_logits, atol=1e-4)  # documented: top-k of split experts differs


def test_qwen2_zero_biases_are_dropped_exactly_and_real_biases_refused(tmp_path):
    dense_dir = save_tiny_model(tmp_path / "qwen0", Qwen2Config(**SHAPES))  # transformers initialises biases to 0
    model = AutoModelForCausalLM.from_pretrained(dense_dir)
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    out = upcycle(dense_dir, tmp_path / "moe", num_experts=2, top_k=1, mode="copy")
    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_logits(out, ids)[0], _logits(dense_dir, ids)[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.bias.normal_()
    model.save_pretrained(tmp_path / "qwen_bias")
    with pytest.raises(RoutelensError, match=r"non-zero biases \(model\.layers\.0\.self_attn\.q_proj\.bias\)"):
        upcycle(tmp_path / "qwen_bias", tmp_path / "refused", num_experts=2, top_k=1, mode="copy")
    assert not (tmp_path / "refused").exists()


def test_bad_inputs_are_one_line_user_errors(llama_dir, tmp_path, tiny_mixtral):
    cases = [
        (dict(dense_dir=tmp_path / "missing"), "no directory"),
        (dict(dense_dir=tiny_mixtral), "already a Mixture-of-Experts model"),
        (dict(num_experts=3, mode="split"), "intermediate size 64 is not divisible by --num-experts 3"),
        (dict(top_k=9), "--top-k 9 is outside 1..8"),
        (dict(num_experts=1, top_k=1), "at least 2 experts"),
        (dict(mode="shuffle"), "--mode 'shuffle' is unknown"),
    ]
    for overrides, message in cases:
        kw = dict(dense_dir=llama_dir, out_dir=tmp_path / "out", num_experts=8, top_k=2, mode="copy")
        kw.update(overrides)
        with pytest.raises(RoutelensError, match=message.replace("(", r"\(").replace(".", r"\.")):
            upcycle(**kw)
    gpt_dir = tmp_path / "gpt2"
    gpt_dir.mkdir()
    (gpt_dir / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(RoutelensError, match="'gpt2' model; upcycle supports dense llama, mistral, qwen2"):
        upcycle(gpt_dir, tmp_path / "out", num_experts=8, top_k=2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(RoutelensError, match="exists and is not empty"):
        upcycle(llama_dir, tmp_path / "full", num_experts=2, top_k=1)
    upcycle(llama_dir, tmp_path / "full", num_experts=2, top_k=1, overwrite=True)
    assert not (tmp_path / "full" / "keep.txt").exists() and (tmp_path / "full" / "config.json").is_file()
