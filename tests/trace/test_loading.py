"""The one loader: a model that ships its own code needs --trust-remote-code (one line saying what
the flag does when it is missing), and with it traces like the model it wraps. Local files only."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import routelens
from routelens.cli.main import app
from routelens.errors import RoutelensError
from routelens.models.loading import load_model
from routelens.trace import TraceConfig
from tests.trace.corpora import DOCS, write_txt

CUSTOM_CODE = '''"""A model whose code lives in its folder (loaded through config.json's auto_map)."""
from transformers import MixtralConfig, MixtralForCausalLM


class TinyCustomConfig(MixtralConfig):
    model_type = "routelens_tiny_custom"


class TinyCustomForCausalLM(MixtralForCausalLM):
    config_class = TinyCustomConfig
'''


@pytest.fixture
def custom_model(tiny_mixtral, tmp_path):
    """The tiny Mixtral's weights under a model type transformers does not know, with its code beside it."""
    folder = tmp_path / "custom"
    shutil.copytree(tiny_mixtral, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="routelens_tiny_custom",
        architectures=["TinyCustomForCausalLM"],
        auto_map={
            "AutoConfig": "custom_moe.TinyCustomConfig",
            "AutoModelForCausalLM": "custom_moe.TinyCustomForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom_moe.py").write_text(CUSTOM_CODE)
    # save_pretrained writes Mixtral's legacy key names, which transformers renames on load by
    # model type; an unknown type gets no renaming, so store the weights under the module names.
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(tiny_mixtral).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_remote_code_is_refused_by_default_in_one_line(custom_model, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    args = ["trace", str(custom_model), "--corpus", f"web={corpus}", "--out", str(tmp_path / "t"), "-q"]
    result = CliRunner().invoke(app, args)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--trust-remote-code" in lines[0] and "runs that Python code" in lines[0]
    assert not (tmp_path / "t").exists()
    with pytest.raises(RoutelensError, match="auto_map"):
        load_model(custom_model, TraceConfig())


def test_with_the_flag_the_models_own_code_runs_and_traces(custom_model, tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    model, _ = load_model(custom_model, TraceConfig(trust_remote_code=True))
    assert type(model).__name__ == "TinyCustomForCausalLM"
    settings = dict(seq_len=16, batch_size=3, weights_dtype="float32", progress=False)
    got = routelens.trace(
        str(custom_model), [f"web={corpus}"], tmp_path / "t-custom", trust_remote_code=True, **settings
    )
    want = routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp_path / "t-plain", **settings)
    assert got.manifest["model"]["architecture"] == "TinyCustomForCausalLM"
    a, b = [pq.read_table(p).to_pylist() for p in got.shards], [pq.read_table(p).to_pylist() for p in want.shards]
    # the same rows; weights may differ in the last float32 bit (transformers picks its kernels by model type)
    assert [[{k: v for k, v in r.items() if k != "weights"} for r in s] for s in a] == [
        [{k: v for k, v in r.items() if k != "weights"} for r in s] for s in b
    ]
    import numpy as np

    for x, y in zip(a, b):
        np.testing.assert_allclose([r["weights"] for r in x], [r["weights"] for r in y], rtol=1e-6, atol=1e-7)
