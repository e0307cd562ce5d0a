"""Shared fixtures: tiny models and tokenizers built inside the tests (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:
    # one torch (OpenMP) thread per worker, and per subprocess a test starts: workers already fill the
    # cores, and more threads than cores spin against each other (the suite ran 4x slower so)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# Reports in the suite keep PNG copies of their figures only: a PDF embeds a subset of its TrueType
# font, the dearest part of a report (0.4 s a figure). The default (PNG and PDF) and the PDFs
# themselves are checked where a test says so (tests/report/test_build.py, test_figures_io.py).
os.environ["ROUTELENS_FIGURE_FORMATS"] = "png"

# Session fixtures that cost tens of seconds to minutes. A session fixture is built once per xdist
# worker that runs a test using it, so the test files that use one of these are scheduled as one
# unit (one worker; `pytest_xdist_make_scheduler` below) and their tests are marked `slow`: the
# fixture is built once per suite. (xdist's own `--dist loadgroup` cannot do this under pytest 9,
# whose node ids it no longer rewrites.)
COSTLY_FIXTURES = ("demo_run", "built")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in COSTLY_FIXTURES):
            item.add_marker(pytest.mark.slow)


def costly_files() -> dict[str, str]:
    """{test file (relative to the repository) -> the unit its tests are scheduled as}, read with
    `ast` (the controller collects no items): `costly:<fixture>` for a file whose test functions or
    fixtures take a fixture of `COSTLY_FIXTURES`; `module:<file>` for a file that defines a fixture
    of module scope, so that it is built once, not once per worker that runs one of its tests."""
    import ast

    found: dict[str, str] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        name = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                used = [a.arg for a in node.args.args if a.arg in COSTLY_FIXTURES]
                if used:
                    found[name] = f"costly:{used[0]}"
                    break
                if name not in found and any(_module_scoped(d) for d in node.decorator_list):
                    found[name] = f"module:{name}"
    return found


def _module_scoped(decorator) -> bool:
    """`@pytest.fixture(scope="module")` (or "package")."""
    import ast

    return isinstance(decorator, ast.Call) and any(
        k.arg == "scope" and isinstance(k.value, ast.Constant) and k.value.value in ("module", "package")
        for k in decorator.keywords
    )


def pytest_xdist_make_scheduler(config, log):
    """Like `--dist load` (one test a unit), but the tests of a file in `costly_files()` go to one
    worker: the worker that builds that file's costly (or module) fixture."""
    if config.getvalue("dist") != "load":
        return None  # another mode asked for by name: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    files = costly_files()

    class CostlyFixturesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return files.get(nodeid.split("::", 1)[0], nodeid)

    return CostlyFixturesTogether(config, log)


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

SAMPLE_TEXT = [
    "def forward(self, x):\n    return self.proj(x) + x\n",
    "The router sends each token to two of eight experts.",
    "Question: Solve 3*x + 4 = 19 for x.\nAnswer: 5",
    "class Cache:\n    def __init__(self, size):\n        self.size = size\n",
    "Mixture-of-Experts models replace each feed-forward block with several experts.",
]


def build_tokenizer(texts=SAMPLE_TEXT, vocab_size: int = 300):
    """A byte-level BPE tokenizer that prepends <s>, as Llama-style tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts * 4, trainer)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]),
        ]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save_tiny_model(path: Path, config, seed: int = 0) -> Path:
    """Randomly initialise `config`'s causal LM, save it with a tokenizer, return the directory."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    config.vocab_size = max(getattr(config, "vocab_size", 0) or 0, len(tokenizer))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_mixtral_config(**overrides):
    from transformers import MixtralConfig

    base = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=512,
        vocab_size=300,
    )
    return MixtralConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def tiny_mixtral(tmp_path_factory) -> Path:
    """A saved tiny Mixtral (2 layers, 8 experts, top-2) with its tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "mixtral", tiny_mixtral_config())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


DEMO_TINY = dict(steps=3, trace_tokens=1_500, pos_tokens=800, saturation_tokens=300, seq_len=64, progress=False)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, Path]:
    """(out, report.html) of one tiny `run_demo`, shared by tests/test_demo.py and tests/cli/."""
    from routelens.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "routelens-demo"
    return out, run_demo(out=out, **DEMO_TINY)
