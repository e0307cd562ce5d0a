"""The verifier (`routelens.capture.verify`): every recorded family verifies on the installed
transformers, against references the recorder does not read; a capture broken on purpose fails,
naming the layer; padding that moves the routing is found and must be listed."""

from __future__ import annotations

import pytest
import torch

from routelens.capture import RoutingRecorder, describe_model
from routelens.capture.verify import VERIFIED, check_padding, check_routing, verify_family
from routelens.models import families as fam
from routelens.models import hooks as rec_module
from routelens.models.catalog import family, moe_families
from routelens.models.families import find_routers
from routelens.models.hooks import handing_out
from routelens.models.overrides import OVERRIDES
from routelens.models.tiny import VOCAB, build
from routelens.models.unsupported import UNSUPPORTED

RECORDED = sorted({f.model_type for f in moe_families()} - set(UNSUPPORTED))


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([12, 9, 5])
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return torch.randint(3, VOCAB, (3, 12), generator=gen).masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("model_type", RECORDED)
def test_every_recorded_family_verifies(model_type):
    verdict = verify_family(model_type)
    assert verdict.verify == VERIFIED, verdict
    assert verdict.padding.startswith("exact") == (
        OVERRIDES.get(model_type) is None or not OVERRIDES[model_type].unpadded
    )


def test_unsupported_families_are_skipped_with_their_reason():
    for model_type, reason in UNSUPPORTED.items():
        assert verify_family(model_type).verify == f"skipped: {reason}"
    assert verify_family("llama").verify.startswith("skipped: not a MoE family")


@pytest.fixture
def mixtral():
    return build("mixtral", family("mixtral").module)


def test_a_recorder_that_misreads_the_experts_fails_at_the_first_layer(mixtral, monkeypatch):
    real = rec_module.experts_inputs

    def shifted(args, kwargs):  # every choice one expert further: the capture is wrong
        index, weights = real(args, kwargs)
        return (index + 1) % 8, weights

    monkeypatch.setattr(rec_module, "experts_inputs", shifted)
    found = check_routing(mixtral, *_batch())
    assert found is not None and found.layer == describe_model(mixtral).moe_layers[0]
    assert "experts differ from the router's own choice" in found.what
    verdict = verify_family("mixtral")
    assert verdict.verify.startswith("failed: experts differ") and not verdict.ok


def test_weights_off_by_a_little_fail(mixtral, monkeypatch):
    real = rec_module.experts_inputs
    monkeypatch.setattr(rec_module, "experts_inputs", lambda a, k: (real(a, k)[0], real(a, k)[1] * 1.001))
    found = check_routing(mixtral, *_batch())
    assert found is not None and "weights differ from the router's own" in found.what


def test_longcat_read_at_its_experts_would_fail(monkeypatch):
    """The recording point of transformers <= 5.24 (the experts' inputs): on a release whose block
    rewrites zero-computation choices it records real experts with weight 0, and verify says so."""
    import transformers
    from packaging.version import Version

    monkeypatch.delitem(fam.ADAPTERS, "LongcatFlashTopkRouter")
    verdict = verify_family("longcat_flash")
    if Version(transformers.__version__) >= Version("5.25.0"):
        assert verdict.verify.startswith("failed: experts differ from the router's own choice"), verdict
    else:  # the experts were handed the router's choice as it was
        assert verdict.verify == VERIFIED


def test_the_block_recomputes_its_output_from_a_routing_handed_out_by_its_router(mixtral):
    """The block check's mechanism: a planted routing handed out by the router gives the block's
    output sum_j w_j expert_j(x), computed here from the fused weights."""
    site = find_routers(mixtral)[0]
    block, experts = site.owner, site.experts
    x = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    index = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [7, 0]])
    weights = torch.tensor([[0.7, 0.3], [0.5, 0.5], [1.0, 0.0], [0.2, 0.8], [0.6, 0.4]])
    with torch.no_grad(), handing_out(site, index, weights):
        got = block(x).reshape(5, -1)
    act = experts.act_fn
    want = torch.zeros(5, 32)
    for t in range(5):
        for j in range(2):
            e = int(index[t, j])
            gate, up = (x[0, t] @ experts.gate_up_proj[e].T).chunk(2)
            want[t] += weights[t, j] * (experts.down_proj[e] @ (act(gate) * up))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and the router is its own again after the block
        assert not torch.allclose(block(x).reshape(5, -1), want)


def test_padding_that_moves_the_routing_is_found():
    model = build("deepseek_v4", family("deepseek_v4").module)
    docs = [torch.randint(3, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (12, 9, 5)]
    # its compressed attention pools over the padded width (left padding moves it on the tiny model)
    assert check_padding(model, docs, left=True) is not None
    mixtral = build("mixtral", family("mixtral").module)
    assert check_padding(mixtral, docs) is None and check_padding(mixtral, docs, left=True) is None


def test_an_unlisted_family_whose_padding_moves_the_routing_fails(monkeypatch):
    monkeypatch.delitem(OVERRIDES, "deepseek_v4")
    verdict = verify_family("deepseek_v4")
    assert verdict.verify.startswith("failed: a padded batch") and "overrides.py" in verdict.verify


def test_the_check_leaves_no_hook_behind(mixtral):
    ids, mask = _batch()
    with torch.no_grad():
        before = mixtral(input_ids=ids, attention_mask=mask).logits
    assert check_routing(mixtral, ids, mask) is None
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mixtral.modules())
    assert hooks == 0
    with torch.no_grad(), RoutingRecorder(mixtral):
        pass
    with torch.no_grad():
        assert torch.equal(mixtral(input_ids=ids, attention_mask=mask).logits, before)
