"""`ablate()` on a model `routelens train` wrote: its intact loss is `routelens eval`'s on the same
text, removing experts changes it, and bad expert lists are refused in one line."""

from __future__ import annotations

import pytest

from routelens.errors import RoutelensError
from routelens.pruning import ablate
from routelens.pruning.configs import parse_experts
from routelens.training.evaluate import evaluate


def test_intact_loss_is_evals_and_removing_experts_changes_it(cli_model):
    model, specs = cli_model
    result = ablate(
        model, specs, experts=["0:1", "1:0,3"], held_out=False, max_tokens=320, seq_len=32, batch_size=4, progress=False
    )
    reference = evaluate(model, specs, max_tokens=320, seq_len=32, batch_size=4, progress=False)
    assert result["removed"] == {"0": [1], "1": [0, 3]} and result["held_out"] is False
    for name, v in reference["domains"].items():
        assert result["intact"]["domains"][name]["tokens"] == v["tokens"]
        assert result["intact"]["domains"][name]["loss"] == pytest.approx(v["loss"], rel=1e-6)
        assert result["ablated"]["domains"][name]["loss"] != pytest.approx(v["loss"], rel=1e-6)
        assert result["delta"]["domains"][name] == pytest.approx(result["ablated"]["domains"][name]["loss"] - v["loss"])


def test_held_out_text_is_the_split_train_kept_aside(cli_model):
    model, specs = cli_model
    held = ablate(model, specs, experts=["0:2"], max_tokens=0, progress=False)
    every = ablate(model, specs, experts=["0:2"], held_out=False, max_tokens=0, progress=False)
    assert held["held_out"] is True and held["seq_len"] == 32  # training.json's window
    # the split holds val_tokens (200) per corpus (whole documents), far fewer than the whole corpus
    assert all(
        held["intact"]["domains"][d]["tokens"] < every["intact"]["domains"][d]["tokens"] for d in ("code", "prose")
    )


def test_bad_expert_lists_are_refused_in_one_line(cli_model):
    model, specs = cli_model
    for experts, message in [
        ((), "no expert to remove"),
        (("0:9",), "layer 0 has experts 0..3"),
        (("5:1",), "not a MoE layer"),
        (("0:0,1,2,3",), "keep no expert"),
        (("x:1",), "is not LAYER:EXPERT"),
    ]:
        with pytest.raises(RoutelensError, match=message):
            ablate(model, specs, experts=experts, progress=False)


def test_expert_specs_merge_per_layer():
    assert parse_experts(["3:5", "3:1,2", "0:7", " 3 : 5 "]) == {0: [7], 3: [1, 2, 5]}
