"""`routelens trace --store-expert-norms`: the `expert_norms` column holds, per token, layer and
chosen expert, the L2 norm of that expert's output before weighting, computed here independently
from the fused weights; the flag changes nothing else; reap pruning reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import routelens
from routelens.errors import RoutelensError
from routelens.models.families import find_routers
from routelens.pruning import expert_importance, prune
from routelens.store import open_trace
from routelens.trace import TraceConfig


def _mixtral_expert_output(experts, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e of a MixtralExperts on x (tokens, H), from its fused weights: down(act(gate) * up)."""
    gate, up = (x @ experts.gate_up_proj[e].T).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ experts.down_proj[e].T


def test_expert_norms_equal_the_experts_outputs_computed_from_their_weights(traced_family, tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir, plain = traced_family("mixtral")
    src = plain.parent
    specs = [f"code={src / 'code.txt'}", f"prose={src / 'prose.txt'}"]
    tr = routelens.trace(
        model_dir, specs, tmp_path / "t", seq_len=32, batch_size=1, store_expert_norms=True, progress=False
    )
    assert tr.manifest["store_expert_norms"] is True and tr.has("expert_norms")
    chunk, base = tr.load(["weights", "expert_norms"]), open_trace(plain).load(["weights"])
    assert np.array_equal(chunk.experts, base.experts) and np.array_equal(chunk.weights, base.weights)
    assert chunk.expert_norms.shape == chunk.experts.shape and chunk.expert_norms.dtype == np.float16
    # independent reference: the hidden states each experts module received, through the fused weights
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sites = find_routers(model)
    seen = [[] for _ in sites]
    handles = [
        s.experts.register_forward_pre_hook(lambda m, a, _i=i: seen[_i].append(a[0].detach()))
        for i, s in enumerate(sites)
    ]
    first = chunk.doc_id == chunk.doc_id[0]
    ids = torch.tensor(chunk.token_id[first][None].astype(np.int64))
    with torch.no_grad():
        model(input_ids=ids)
        for h in handles:
            h.remove()
        for layer, site in enumerate(sites):
            x = seen[layer][0].reshape(-1, x_dim := seen[layer][0].shape[-1])
            assert x.shape == (first.sum(), x_dim)
            for slot in range(2):
                want = torch.stack(
                    [
                        _mixtral_expert_output(site.experts, int(e), x[t : t + 1])[0].norm()
                        for t, e in enumerate(chunk.experts[first][:, layer, slot])
                    ]
                )
                got = torch.from_numpy(chunk.expert_norms[first][:, layer, slot].astype(np.float32))
                torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-3)


def test_reap_prunes_from_a_trace_with_norms(traced_family, tmp_path):
    model_dir, plain = traced_family("olmoe")
    src = plain.parent
    tr = routelens.trace(
        model_dir, [f"code={src / 'code.txt'}"], tmp_path / "t", seq_len=32, store_expert_norms=True, progress=False
    )
    result = expert_importance(tr, progress=False)
    assert "reap" in result["meta"]["criteria"]
    record = prune(model_dir, tr, tmp_path / "p", keep=6, criterion="reap", progress=False)
    reap = np.array([result["overall"]["reap"][str(layer)] for layer in tr.layers])
    for i, ids in enumerate(record["kept"].values()):
        dropped = [e for e in range(8) if e not in ids]
        assert reap[i][dropped].max() <= reap[i][ids].min()  # the two lowest-reap experts went


def test_the_flag_is_part_of_the_identity_only_when_on():
    assert "store_expert_norms" not in TraceConfig().identity()  # traces begun before the flag still resume
    assert TraceConfig(store_expert_norms=True).identity()["store_expert_norms"] is True


def test_llama4_refuses_expert_norms():
    from routelens.capture import describe_model
    from routelens.models.tiny import build
    from routelens.trace.norms import ExpertNormRecorder

    model = build("llama4_text")
    with pytest.raises(RoutelensError, match="scaled inputs"):
        ExpertNormRecorder(model, describe_model(model))
