"""One capacity rule: training, evaluation and the expert-parallel simulator give an expert the same
slots for the same tokens, experts, k and capacity factor (issue 12, item 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import MixtralForCausalLM

import routelens.training.evaluate as evaluate_module
import routelens.training.train as train_module
from routelens.simulate.balance import batch_counts, dropped_assignments
from routelens.simulate.balance import expert_capacity as simulator_capacity
from routelens.training.capacity import apply_capacity, expert_capacity
from tests.conftest import tiny_mixtral_config


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("cf", [0.5, 1.0, 1.1, 1.25, 2.0])
def test_simulator_and_training_formula_agree(k, cf):
    for tokens in (1, 7, 10, 64, 100, 4096):
        for E in (4, 8, 60):
            got = int(simulator_capacity(np.array([tokens]), k, E, cf)[0])
            assert got == expert_capacity(tokens, E, k, cf), (tokens, E, k, cf)
    assert expert_capacity(4096, 8, 1, 1.0) == 4096 // 8  # Switch, top-1: tokens / E x CF
    assert expert_capacity(10, 8, 2, 1.0) == 3  # 2.5 slots rounded up, never down


def test_train_and_evaluate_use_the_shared_capacity_forward():
    assert train_module.apply_capacity is apply_capacity and evaluate_module.apply_capacity is apply_capacity


@pytest.mark.parametrize("cf", [0.5, 1.0, 1.25])
def test_the_patched_forward_drops_what_the_simulator_drops(cf):
    # The forward that train and eval run under --capacity-factor, on one batch of 3 x 20 tokens: its
    # dropped count per layer equals the simulator's drops for the same routing as one batch.
    torch.manual_seed(0)
    model = MixtralForCausalLM(tiny_mixtral_config()).eval()
    seen = []
    hooks = [
        layer.mlp.experts.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
        for layer in model.model.layers
    ]
    try:
        with torch.no_grad(), apply_capacity(model, capacity_factor=cf) as stats:
            model(input_ids=torch.randint(0, 300, (3, 20)))
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 2
    for layer, index in enumerate(seen):  # (60, 2) expert ids the block routed
        counts, sizes = batch_counts(index.numpy(), 8, batch_tokens=60)
        capacity = simulator_capacity(sizes, 2, 8, cf)
        assert int(dropped_assignments(counts, capacity, np.ones(8, np.int64))[0]) == int(stats.dropped[layer])
    assert stats.dropped.sum() > 0  # the comparison was not between zeros
