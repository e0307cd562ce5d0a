"""A multimodal MoE checkpoint (a whole Qwen3-VL-MoE: vision tower and language model, saved with
`save_pretrained`) has no causal-LM class: the loader takes its multimodal class, text corpora run
its language model, and the recorded experts equal what its experts modules received."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import routelens
from routelens.models.loading import model_class
from tests.conftest import build_tokenizer
from tests.trace.corpora import DOCS, write_txt


def tiny_qwen3_vl_moe():
    from transformers import Qwen3VLMoeConfig

    from routelens.models.tiny import tiny_config

    text = tiny_config("qwen3_vl_moe", vocab_size=300)
    vision = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=32,
        num_heads=2,
        out_hidden_size=32,
        patch_size=4,
        spatial_merge_size=1,
        temporal_patch_size=1,
        deepstack_visual_indexes=[0],
    )
    return Qwen3VLMoeConfig(text_config=text.to_dict(), vision_config=vision)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import transformers

    config = tiny_qwen3_vl_moe()
    cls = model_class(config)
    assert cls is transformers.AutoModelForMultimodalLM  # no causal LM maps this config
    torch.manual_seed(0)
    model = cls.from_config(config).eval()
    folder = tmp_path_factory.mktemp("vl") / "qwen3-vl-moe"
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder, model


def test_traces_the_language_model_exactly(saved, tmp_path):
    folder, model = saved
    corpus = write_txt(tmp_path / "docs.txt", DOCS)
    tr = routelens.trace(folder, [f"prose={corpus}"], tmp_path / "trace", seq_len=64, batch_size=2, progress=False)
    chunk = tr.load()
    assert tr.manifest["family"] and len(tr.layers) >= 1
    language = model.model.language_model
    seen: list[torch.Tensor] = []
    handles = [
        layer.mlp.experts.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
        for layer in language.layers
        if hasattr(layer.mlp, "experts")
    ]
    try:
        window = chunk.doc_id.astype(np.int64) * 1_000_000 + chunk.position // 64  # each window runs alone
        starts = np.flatnonzero(np.r_[True, window[1:] != window[:-1]])
        bounds = [*starts, len(chunk)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            seen.clear()
            with torch.inference_mode():
                model.model(input_ids=torch.from_numpy(chunk.token_id[a:b].astype(np.int64))[None])
            expected = np.stack([s.numpy() for s in seen], 1)  # (tokens, layers, k)
            np.testing.assert_array_equal(chunk.experts[a:b], expected)
    finally:
        for h in handles:
            h.remove()
