"""describe_model: what routelens records from each family, derived from the model's own modules."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from routelens.capture import SUPPORTED, RoutingSpec, describe_model
from routelens.errors import RoutelensError, UnsupportedModelError
from tests.capture.tiny_moe import CONFIGS

H = 32  # hidden size of every tiny config


def test_every_required_family_is_supported():
    assert set(CONFIGS) <= set(SUPPORTED)


@pytest.mark.parametrize(
    ("family", "num_experts", "top_k", "expert_params"),
    [
        ("mixtral", 8, 2, 3 * H * 64),  # gate, up, down of intermediate 64
        ("qwen2_moe", 8, 2, 3 * H * 16),  # moe_intermediate_size 16; the shared expert (32) is not counted
        ("deepseek_v3", 16, 4, 3 * H * 16),  # dense first layer and shared expert not counted
        ("gpt_oss", 4, 2, H * 2 * 16 + 2 * 16 + 16 * H + H),  # transposed weights with biases
        ("dbrx", 4, 2, 3 * H * 16),  # w1, v1, w2 stacked as (E * ffn, H)
        ("llama4", 4, 2, 3 * H * 16),
    ],
)
def test_describe_model_reads_experts_and_sizes_from_the_modules(moe_model, family, num_experts, top_k, expert_params):
    spec = describe_model(moe_model(family))
    assert isinstance(spec, RoutingSpec)
    got = (spec.family, spec.num_experts, spec.top_k, spec.expert_params)
    assert got == (family, num_experts, top_k, expert_params)


def test_rule_states_the_configured_switches(moe_model):
    assert "norm_topk_prob=True" in describe_model(moe_model("qwen3_moe")).rule
    assert "norm_topk_prob=False" in describe_model(moe_model("qwen2_moe")).rule
    v3 = describe_model(moe_model("deepseek_v3")).rule
    assert "e_score_correction_bias" in v3 and "routed_scaling_factor=2.5" in v3
    assert "group_limited_greedy" in describe_model(moe_model("deepseek_v2")).rule
    assert "p=moe_normalize_expert_weights=1.0" in describe_model(moe_model("dbrx")).rule


def test_dense_model_is_unsupported_with_a_message_naming_it_and_the_families():
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=97,
    )
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModelError) as err:
        describe_model(LlamaForCausalLM(config))
    message = str(err.value)
    assert isinstance(err.value, RoutelensError)
    assert message.startswith("LlamaForCausalLM has no MoE layer routelens can record; supported: ")
    assert all(family in message for family in SUPPORTED)
    assert "\n" not in message


def test_a_whole_multimodal_model_is_described_by_its_text_layers():
    """The full Qwen3-VL-MoE (vision tower included, on the meta device: no weights) routes text
    through the layers of its tiny text config; the vision tower adds no MoE layer."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    from routelens.models.tiny import tiny_config

    text = tiny_config("qwen3_vl_moe")
    with torch.device("meta"):
        model = Qwen3VLMoeForConditionalGeneration(Qwen3VLMoeConfig(text_config=text.to_dict()))
    spec = describe_model(model)
    assert (spec.family, spec.moe_layers, spec.num_experts, spec.top_k) == ("qwen3_vl_moe", [0, 1, 2, 3], 8, 2)
