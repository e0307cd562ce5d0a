"""`routelens trace --lookahead D`: the column equals the routers of later layers applied to the
inputs the earlier layers' routers received, recomputed here from the router weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import routelens
from routelens.trace import TraceConfig
from tests.conftest import save_tiny_model, tiny_mixtral_config
from tests.trace.corpora import DOCS, forward_pre_inputs, write_txt


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "mixtral4", tiny_mixtral_config(num_hidden_layers=4))


def router_inputs(model, window_ids):
    """Independent ground truth: the hidden states each layer's router (mlp.gate) received (tokens, H)."""
    return forward_pre_inputs(
        model, window_ids, lambda layer: layer.mlp.gate, lambda args: args[0].reshape(-1, args[0].shape[-1])
    )


def test_lookahead_column_is_the_later_routers_on_the_earlier_inputs(four_layers, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = write_txt(tmp_path / "a.txt", DOCS)
    tr = routelens.trace(
        str(four_layers),
        [f"web={corpus}"],
        tmp_path / "t",
        TraceConfig(seq_len=16, batch_size=3, lookahead=2, progress=False),
    )
    rows = tr.load(["lookahead"])
    assert rows.lookahead.shape == (len(rows), 4, 2, 2) and rows.lookahead.dtype == np.int16  # (tokens, L, D, k)
    assert tr.manifest["lookahead"] == 2
    tok = AutoTokenizer.from_pretrained(four_layers)
    model = AutoModelForCausalLM.from_pretrained(four_layers).eval()
    gates = [layer.mlp.gate for layer in model.model.layers]
    ids = tok([d.replace("\n\n", "\n") for d in DOCS])["input_ids"]
    for d, doc_ids in enumerate(ids):
        got = rows.lookahead[rows.doc_id == d]
        want = np.full(got.shape, -1, np.int16)
        at = 0
        for s in range(0, len(doc_ids), 16):
            inputs = router_inputs(model, doc_ids[s : s + 16])
            n = len(inputs[0])
            for layer in range(4):
                for ahead in (1, 2):
                    if layer + ahead < 4:
                        with torch.no_grad():
                            logits = inputs[layer].float() @ gates[layer + ahead].weight.float().T  # (n, E)
                        want[at : at + n, layer, ahead - 1] = torch.topk(logits, 2, dim=-1).indices.numpy()
            at += n
        np.testing.assert_array_equal(got, want)
    # d = 1 from layer l is not simply layer l+1's own routing (the input differs): the predictor is non-trivial.
    assert (rows.lookahead[:, 0, 0] != rows.experts[:, 1]).any()


def test_lookahead_off_leaves_no_column_and_negative_is_refused(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS[:2])
    tr = routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp_path / "t", progress=False)
    assert not tr.has("lookahead")
    with pytest.raises(routelens.RoutelensError, match="--lookahead"):
        TraceConfig(lookahead=-1)
