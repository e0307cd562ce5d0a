"""Parameter accounting from configs on the meta device, against published figures and hand counts."""

from __future__ import annotations

import pytest
from transformers import (
    DeepseekV2Config,
    DeepseekV3Config,
    LlamaConfig,
    MixtralConfig,
    OlmoeConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)

from routelens.errors import RoutelensError
from routelens.training.params import (
    Component,
    build_on_meta,
    component_of,
    count_parameters,
    inspect_model,
)

MIXTRAL_8X7B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_local_experts=8,
    num_experts_per_tok=2,
    vocab_size=32000,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)


def _report(config, **kw):
    return count_parameters(build_on_meta(config), **kw)


@pytest.fixture(scope="module")
def mixtral_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "mixtral-8x7b"
    MixtralConfig(**MIXTRAL_8X7B).save_pretrained(path)
    return path


def test_mixtral_8x7b_matches_the_published_46_7b_total_12_9b_active(mixtral_dir):
    r = inspect_model(mixtral_dir / "config.json")
    assert round(r.total_params / 1e9, 1) == 46.7 and round(r.active_params / 1e9, 1) == 12.9
    h, i, v, layers, kv = 4096, 14336, 32000, 32, 8 * 128
    attention = h * h * 2 + h * kv * 2
    expert = 3 * h * i
    assert r.expert_params == expert
    assert r.components[Component.EXPERTS_ROUTED] == (layers * 8 * expert, layers * 2 * expert)
    assert r.components[Component.ATTENTION].total == layers * attention
    assert r.total_params == 2 * v * h + layers * (attention + 8 * expert + 8 * h + 2 * h) + h
    assert r.active_params == r.total_params - layers * 6 * expert
    assert (
        r.memory_bytes()["bf16"] == 2 * r.total_params and r.memory_bytes(active=True)["int4"] == r.active_params // 2
    )
    assert (r.num_experts, r.top_k, r.moe_layers, r.tied_embeddings) == (8, 2, list(range(32)), False)


def test_qwen2_moe_shared_expert_dense_layer_and_tied_embeddings_by_hand():
    h, vocab, inter, moe_i, shared_i, heads, kv, e, k = 16, 100, 48, 8, 24, 4, 2, 6, 2
    cfg = Qwen2MoeConfig(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=inter,
        moe_intermediate_size=moe_i,
        shared_expert_intermediate_size=shared_i,
        num_hidden_layers=3,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        num_experts=e,
        num_experts_per_tok=k,
        mlp_only_layers=[1],
        tie_word_embeddings=True,
    )
    r = _report(cfg)
    hd = h // heads
    attention = (h * h + h) + 2 * (h * kv * hd + kv * hd) + h * h  # q, k, v carry biases in Qwen2
    expert = 3 * h * moe_i
    expected = {
        Component.EMBEDDINGS: (vocab * h, vocab * h),  # tied: the lm_head is this same matrix
        Component.ATTENTION: (3 * attention,) * 2,
        Component.NORMS: (3 * 2 * h + h,) * 2,
        Component.ROUTER: (2 * e * h,) * 2,
        Component.EXPERTS_ROUTED: (2 * e * expert, 2 * k * expert),
        Component.SHARED_EXPERTS: (2 * (3 * h * shared_i + h),) * 2,  # + the sigmoid gate (1, h)
        Component.DENSE_FFN: (3 * h * inter,) * 2,
    }
    assert {c: (n.total, n.active) for c, n in r.components.items()} == expected
    assert r.moe_layers == [0, 2] and r.tied_embeddings and Component.LM_HEAD not in r.components
    assert r.total_params == sum(t for t, _ in expected.values()) == 13552
    assert r.active_params == 10480


def test_deepseek_v3_mla_shared_experts_and_first_dense_layers_by_hand():
    h, vocab, inter, moe_i, heads, e, k = 16, 100, 48, 8, 4, 8, 2
    q_rank, kv_rank, rope, nope, v_dim = 12, 8, 4, 4, 4
    cfg = DeepseekV3Config(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=inter,
        moe_intermediate_size=moe_i,
        num_hidden_layers=3,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        n_routed_experts=e,
        n_shared_experts=1,
        num_experts_per_tok=k,
        first_k_dense_replace=1,
        q_lora_rank=q_rank,
        kv_lora_rank=kv_rank,
        qk_rope_head_dim=rope,
        qk_nope_head_dim=nope,
        v_head_dim=v_dim,
        n_group=2,
        topk_group=1,
    )
    r = _report(cfg)
    attention = (
        q_rank * h
        + heads * (nope + rope) * q_rank  # q down and up projections
        + (kv_rank + rope) * h
        + heads * (nope + v_dim) * kv_rank  # kv down (with the shared rope key) and up
        + h * heads * v_dim  # o_proj
    )
    expert = 3 * h * moe_i
    assert r.components[Component.ATTENTION].total == 3 * attention
    assert r.components[Component.NORMS].total == 3 * (2 * h + q_rank + kv_rank) + h
    assert r.components[Component.DENSE_FFN].total == 3 * h * inter  # layer 0 only
    assert r.components[Component.ROUTER].total == 2 * (e * h + e)  # weight + e_score_correction_bias
    assert r.components[Component.SHARED_EXPERTS].total == 2 * expert  # one shared expert of moe_i
    assert r.components[Component.EXPERTS_ROUTED] == (2 * e * expert, 2 * k * expert)
    assert r.components[Component.LM_HEAD].total == vocab * h and not r.tied_embeddings
    assert r.moe_layers == [1, 2] and r.active_params == r.total_params - 2 * (e - k) * expert


@pytest.mark.parametrize(
    "config",
    [
        OlmoeConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=8,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            num_experts=8,
            num_experts_per_tok=3,
        ),
        Qwen3MoeConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            moe_intermediate_size=8,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=4,
            num_experts=8,
            num_experts_per_tok=2,
        ),
        DeepseekV2Config(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            moe_intermediate_size=8,
            num_hidden_layers=2,
            num_attention_heads=4,
            n_routed_experts=8,
            n_shared_experts=2,
            num_experts_per_tok=2,
            first_k_dense_replace=0,
            q_lora_rank=None,
            kv_lora_rank=8,
            qk_rope_head_dim=4,
            qk_nope_head_dim=4,
            v_head_dim=4,
            n_group=1,
            topk_group=1,
        ),
    ],
    ids=["olmoe", "qwen3_moe", "deepseek_v2"],
)
def test_families_are_counted_completely(config):
    model = build_on_meta(config)
    r = count_parameters(model)
    assert r.total_params == sum(p.numel() for p in model.parameters())  # nothing lost or counted twice
    assert Component.OTHER not in r.components
    e, k = r.num_experts, r.top_k
    assert (e, k, r.moe_layers) == (8, config.num_experts_per_tok, [0, 1])
    routed = r.components[Component.EXPERTS_ROUTED].total
    assert routed == 2 * e * r.expert_params
    assert r.active_params == r.total_params - routed * (e - k) // e


def test_dense_model_is_all_active_and_top_k_override_changes_only_experts():
    dense = _report(
        LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4)
    )
    assert dense.active_params == dense.total_params and dense.num_experts is None and dense.moe_layers == []
    assert dense.components[Component.DENSE_FFN].total == 2 * 3 * 16 * 32
    tiny = MixtralConfig(
        **{
            **MIXTRAL_8X7B,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 50,
        }
    )
    model = build_on_meta(tiny)
    two, one = count_parameters(model), count_parameters(model, top_k=1)
    assert two.total_params == one.total_params
    assert two.active_params - one.active_params == 2 * two.expert_params  # one expert fewer in each of 2 layers
    with pytest.raises(RoutelensError, match="top-k 9 is outside 1..8"):
        count_parameters(model, top_k=9)


def test_component_names():
    cases = {
        "model.layers.0.mlp.gate.weight": Component.ROUTER,
        "model.layers.0.mlp.gate_proj.weight": Component.DENSE_FFN,
        "model.layers.0.mlp.experts.gate_up_proj": Component.EXPERTS_ROUTED,
        "model.layers.0.mlp.shared_expert_gate.weight": Component.SHARED_EXPERTS,
        "model.layers.0.self_attn.q_norm.weight": Component.NORMS,
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": Component.ATTENTION,
        "model.embed_tokens.weight": Component.EMBEDDINGS,
        "lm_head.weight": Component.LM_HEAD,
    }
    assert {n: component_of(n) for n in cases} == cases
