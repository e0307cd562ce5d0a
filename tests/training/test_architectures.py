"""`routelens train --architecture`: every family trains end to end into a checkpoint of its own
class that routelens records; the sigmoid balance loss and DeepSeek-V3's bias update against
closed forms; runs saved before the field existed are the same run; the errors a user can hit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from routelens.capture import RoutingRecorder, describe_model
from routelens.errors import RoutelensError
from routelens.models.architectures import Architecture, deepseek_groups, router_probs, update_selection_bias
from routelens.models.families import find_routers
from routelens.training.configs import TrainConfig
from routelens.training.train import balance_loss, train
from tests.training.test_train import MICRO, write_micro_corpus

FAMILY = {"mixtral": "mixtral", "olmoe": "olmoe", "qwen3_moe": "qwen3_moe", "deepseek_v3": "deepseek_v3"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_micro_corpus(tmp_path_factory.mktemp("arch-corpus"))


@pytest.mark.parametrize("arch", [a.value for a in Architecture if a is not Architecture.MIXTRAL])
def test_each_architecture_trains_into_its_own_class(arch, corpus, tmp_path):
    cfg = dataclasses.replace(MICRO, architecture=arch, steps=6, lr=1e-2, num_experts=4, top_k=2, num_layers=3)
    out = train(corpus, tmp_path / arch, cfg, progress=False)
    meta = json.loads((out / "training.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == Architecture(arch).model_class == meta["model"]["architecture"]
    assert meta["config"]["architecture"] == arch
    spec = describe_model(model)
    assert spec.family == FAMILY[arch] and spec.num_experts == 4 and spec.top_k == 2
    # DeepSeek-V3's first layer is dense, as in the real model; the others route every layer
    assert spec.moe_layers == ([1, 2] if arch == "deepseek_v3" else [0, 1, 2])
    losses = [h["loss"] for h in meta["history"]]
    assert min(losses[-2:]) < losses[0]  # it learns
    biases = [
        s.router.e_score_correction_bias for s in find_routers(model) if hasattr(s.router, "e_score_correction_bias")
    ]
    if arch == "deepseek_v3":
        # 6 updates of -1e-3, 0 or +1e-3 each: on a grid of 1e-3 steps, at most 6e-3 away, and moved
        grid = torch.cat(biases) / 1e-3
        assert torch.allclose(grid, grid.round(), atol=1e-3) and grid.abs().max() <= 6 + 1e-3 and grid.abs().max() > 0
    else:
        assert not biases


def test_sigmoid_balance_loss_closed_form():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, -2.0, 0.0, 0.0]])
    probs = router_probs(logits, sigmoid=True)
    s = torch.sigmoid(logits)
    assert torch.allclose(probs, s / s.sum(1, keepdim=True)) and torch.allclose(probs.sum(1), torch.ones(2))
    chosen = torch.tensor([[1, 3], [1, 2]])  # what the experts were given (bias and groups make it differ from top-k)
    f = torch.tensor([0, 2, 1, 1]) / 4
    expected = 4 * (f * probs.mean(0)).sum()
    got = balance_loss([logits], 2, sigmoid=True, chosen=[chosen])
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # without `chosen`, f comes from the probabilities' own top-k: here another answer
    assert balance_loss([logits], 2, sigmoid=True).item() != pytest.approx(expected.item(), rel=1e-3)


def test_bias_update_moves_toward_balance():
    from transformers import DeepseekV3Config

    cfg = DeepseekV3Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        kv_lora_rank=8,
        q_lora_rank=None,
        qk_nope_head_dim=8,
        qk_rope_head_dim=4,
        v_head_dim=8,
    )
    model = AutoModelForCausalLM.from_config(cfg)
    sites = find_routers(model)
    # loads 3, 2, 1, 2 (mean 2): expert 0 over, expert 2 under, 1 and 3 exactly at the mean
    chosen = torch.tensor([[[0, 1], [0, 2], [0, 3], [1, 3]]])  # (MoE layers, tokens, k)
    imbalance = update_selection_bias(sites, chosen, 0.5)
    assert sites[0].router.e_score_correction_bias.tolist() == [-0.5, 0.0, 0.5, 0.0]
    assert imbalance == [pytest.approx(1.5)]
    # training feeds it what the recorder took: one (tokens, k) per MoE layer, ids of this layer's experts
    with torch.no_grad(), RoutingRecorder(model) as recorder:
        model(input_ids=torch.arange(10)[None])
        taken = recorder.take().experts
    assert taken.shape == (10, 1, 2) and int(taken.max()) < 4
    update_selection_bias(sites, taken.unbind(1), 0.0)  # rate 0: the biases stay
    assert sites[0].router.e_score_correction_bias.tolist() == [-0.5, 0.0, 0.5, 0.0]


def test_groups_and_settings():
    assert deepseek_groups(8, 2) == 2 and deepseek_groups(8, 5) == 1 and deepseek_groups(7, 2) == 1
    assert TrainConfig(architecture="deepseek_v3").resolved_bias_update_rate == 1e-3
    assert TrainConfig().resolved_bias_update_rate == 0.0
    with pytest.raises(RoutelensError, match="'gpt' is unknown; use one of mixtral, olmoe, qwen3_moe, deepseek_v3"):
        TrainConfig(architecture="gpt")
    with pytest.raises(RoutelensError, match="no selection bias"):
        TrainConfig(architecture="olmoe", bias_update_rate=1e-3)
    with pytest.raises(RoutelensError, match="negative"):
        TrainConfig(architecture="deepseek_v3", bias_update_rate=-1.0)


def test_a_run_saved_before_architecture_existed_is_the_same_mixtral_run():
    saved = {k: v for k, v in MICRO.to_json().items() if k not in ("architecture", "bias_update_rate")}
    assert MICRO.differences(saved) == []
    assert dataclasses.replace(MICRO, architecture="olmoe").differences(saved) == ["architecture"]


def test_init_of_another_architecture_is_refused_with_the_flag_to_use(corpus, tmp_path):
    out = train(corpus, tmp_path / "olmoe", dataclasses.replace(MICRO, architecture="olmoe", steps=2), progress=False)
    with pytest.raises(
        RoutelensError,
        match="is a OlmoeForCausalLM; --architecture mixtral trains a MixtralForCausalLM "
        r"\(pass --architecture olmoe\)",
    ):
        train(corpus, tmp_path / "ft", dataclasses.replace(MICRO, init=str(out), steps=2), progress=False)
