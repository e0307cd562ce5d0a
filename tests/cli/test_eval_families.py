"""`routelens eval` on a family other than the Mixtral `routelens train` writes: a tiny OLMoE saved
with its tokenizer evaluates with the tables, a capacity and another k; Llama 4 is refused a
capacity in one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from routelens.cli.main import app
from tests.conftest import SAMPLE_TEXT


def test_eval_cli_on_olmoe(tmp_path):
    from tests.pruning.conftest import save_tiny

    model = save_tiny(tmp_path / "olmoe", "olmoe")
    (tmp_path / "prose.txt").write_text("\n\n".join(SAMPLE_TEXT * 3))
    args = [
        "eval",
        str(model),
        "--corpus",
        f"prose={tmp_path / 'prose.txt'}",
        "--seq-len",
        "16",
        "--max-tokens",
        "128",
        "--quiet",
    ]
    free = CliRunner().invoke(app, args)
    assert free.exit_code == 0, free.output
    text = " ".join(free.output.split())  # the table title wraps at the console width
    assert "top-2 of 8, capacity factor unlimited" in text and "perplexity" in text
    assert "prose" in text and "dropped by capacity, per MoE layer" in text
    tight = CliRunner().invoke(app, [*args, "--capacity-factor", "0.5", "--top-k", "1", "--json", "-"])
    assert tight.exit_code == 0, tight.output
    result = json.loads(tight.stdout)
    assert result["top_k"] == 1 and result["num_experts"] == 8 and result["moe_layers"] == [0, 1]
    # top-1 at CF 0.5: half the slots of balanced routing, so at least half the tokens lose their expert
    assert (
        all(d >= 0.5 - 1e-9 for d in result["dropped_share"])
        and result["fully_dropped_share"] == result["dropped_share"]
    )


def test_eval_cli_refuses_a_capacity_for_llama4_in_one_line(tmp_path):
    from transformers import AutoModelForCausalLM

    from tests.capture.tiny_moe import CONFIGS
    from tests.conftest import build_tokenizer

    config = CONFIGS["llama4"]()
    config.vocab_size = 300  # the byte-level tokenizer's vocabulary
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "llama4")
    build_tokenizer().save_pretrained(tmp_path / "llama4")
    (tmp_path / "prose.txt").write_text("\n\n".join(SAMPLE_TEXT))
    args = [
        "eval",
        str(tmp_path / "llama4"),
        "--corpus",
        f"prose={tmp_path / 'prose.txt'}",
        "--seq-len",
        "16",
        "--max-tokens",
        "64",
        "--quiet",
    ]
    refused = CliRunner().invoke(app, [*args, "--capacity-factor", "1.0"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "capacity factor 1 cannot be applied to this llama4 model" in " ".join(refused.output.split())
    plain = CliRunner().invoke(app, [*args, "--json", "-"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["moe_layers"] == [1, 3]
