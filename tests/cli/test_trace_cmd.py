"""`routelens trace` and `routelens info` from the command line: output, and errors as one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.trace.corpora import DOCS, write_txt

runner = CliRunner()


def test_cli_trace_and_info(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    res = runner.invoke(
        app, ["trace", str(tiny_mixtral), "--corpus", f"web={corpus}", "--out", str(tmp_path / "t"), "-q"]
    )
    assert res.exit_code == 0, res.output
    assert "traced" in res.output
    res = runner.invoke(app, ["info", str(tmp_path / "t")])
    assert res.exit_code == 0 and "top-2 of 8" in res.output and "web" in res.output
    res = runner.invoke(app, ["info", str(tmp_path / "t"), "--json"])
    assert json.loads(res.output)["num_experts"] == 8


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing_model", "no model at"),
        ("empty_corpus", "holds no text"),
        ("bad_conllu", "not valid CoNLL-U"),
        ("bad_spec", "NAME=PATH"),
        ("dense_model", "LlamaForCausalLM"),
        ("missing_trace", "no routelens trace"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_write_nothing(case, fragment, tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    model, spec = str(tiny_mixtral), f"web={corpus}"
    if case == "missing_model":
        model = str(tmp_path / "nope")
    elif case == "empty_corpus":
        (tmp_path / "e.txt").write_text("\n\n  \n")
        spec = f"web={tmp_path / 'e.txt'}"
    elif case == "bad_conllu":
        (tmp_path / "b.conllu").write_text("1\tw\tw\tNOUN\t_\t_\t0\troot\t_\t_\n\n1\tbroken\n\n")
        spec = f"ud={tmp_path / 'b.conllu'}"
    elif case == "bad_spec":
        spec = corpus
    elif case == "dense_model":
        from transformers import LlamaConfig

        from tests.conftest import save_tiny_model

        model = str(
            save_tiny_model(
                tmp_path / "dense",
                LlamaConfig(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    num_key_value_heads=2,
                ),
            )
        )
    args = ["trace", model, "--corpus", spec, "--out", str(tmp_path / "out"), "-q"]
    if case == "missing_trace":
        args = ["info", str(tmp_path / "nothing")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_cli_trace_generate_writes_decode_rows_and_refuses_ray(tiny_mixtral, tmp_path):
    from routelens.store.reader import open_trace

    corpus = write_txt(tmp_path / "p.txt", DOCS)
    # (prompt length + generated tokens must fit the tiny model's 512 positions)
    args = [
        "trace",
        str(tiny_mixtral),
        "--corpus",
        f"p={corpus}",
        "--out",
        str(tmp_path / "g"),
        "-q",
        "--generate",
        "3",
        "--seq-len",
        "64",
    ]
    res = runner.invoke(app, [*args, "--temperature", "0.7", "--top-p", "0.9", "--seed", "4"])
    assert res.exit_code == 0, res.output
    tr = open_trace(tmp_path / "g")
    assert tr.manifest["generation"]["temperature"] == 0.7 and tr.manifest["generation"]["seed"] == 4
    phase = tr.load(["phase"]).phase
    assert (phase == 1).sum() == 3 * tr.manifest["totals"]["documents"] and (phase == 0).sum() > 0
    res = runner.invoke(app, [*args, "--ray", "--overwrite"])
    assert res.exit_code == 2 and "--ray" in res.output and len(res.output.strip().splitlines()) == 1, res.output
