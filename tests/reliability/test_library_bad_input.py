"""The bad-input suite, through the library: the functions the commands call refuse the same bad
inputs with a RoutelensError whose message matches the CLI case's fragment (tests/reliability/
test_bad_input.py), leave what was on disk as it was, and refuse an output whose lock another process
holds in the CLI's words. A Python user gets the command's guarantees, not only its users.

Every CLI case has a call of the same name here, or its reason in CLI_ONLY."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from routelens.errors import RoutelensError
from routelens.lock import OutputLockedError
from tests.reliability.conftest import Env, checksum, copy_model, copy_trace
from tests.reliability.test_bad_input import (
    CASES,
    CORPUS_FRAGMENT,
    READER_DAMAGE,
    TRACE_DAMAGE,
    bad_corpora,
    old_output,
    under_a_file,
    write,
)


@dataclass
class Call:
    run: Callable[[], object]  # the library call, with the CLI case's bad input
    fragment: str  # the CLI case's regex
    watch: list[Path] = field(default_factory=list)


CALLS: dict[str, Callable[[Env, Path], Call]] = {}


def call(name: str):
    def register(fn):
        assert name not in CALLS
        CALLS[name] = fn
        return fn

    return register


# -- routelens.trace ------------------------------------------------------------------------------
def traced(env: Env, out: Path, corpus: str | None = None, model: Path | None = None, **overrides):
    from routelens import trace

    specs = [corpus or f"web={env.corpus}"]
    return lambda: trace(str(model or env.model), specs, out, seq_len=32, progress=False, **overrides)


# The CLI suite's damaged models and the words each refusal must hold.
MODEL_DAMAGE = {
    "corrupt weights": r"model\.safetensors",
    "truncated weights": r"model\.safetensors",
    "experts disagree": r"expert",
    "top_k too large": r"top.?k|experts_per_tok",
    "no tokenizer": r"tokenizer",
    "config not json": r"config\.json",
}


for _name in CORPUS_FRAGMENT:

    def _trace_corpus(env, tmp, _name=_name):
        out = tmp / "t"
        return Call(traced(env, out, bad_corpora(tmp)[_name]), CORPUS_FRAGMENT[_name], [out])

    call(f"trace {_name} corpus")(_trace_corpus)


@call("trace --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Call(traced(env, out), re.escape(str(blocker)), [blocker])


@call("trace --out is a file")
def _(env, tmp):
    out = write(tmp / "t", "mine")
    return Call(traced(env, out), r"is a file|not a (folder|directory)", [out])


@call("trace into another trace")
def _(env, tmp):
    out = copy_trace(env, tmp / "t")
    return Call(traced(env, out, max_tokens=40), r"--overwrite", [out])


@call("trace --seq-len beyond the model")
def _(env, tmp):
    from routelens import trace

    out = tmp / "t"
    run = lambda: trace(str(env.model), [f"web={env.corpus}"], out, seq_len=4096, progress=False)  # noqa: E731
    return Call(run, r"--seq-len 4096 is beyond the model's max_position_embeddings 512", [out])


@call("trace --generate leaving no room for a prompt")
def _(env, tmp):
    from routelens import trace

    out = tmp / "t"
    run = lambda: trace(str(env.model), [f"web={env.corpus}"], out, generate=512, progress=False)  # noqa: E731
    return Call(run, r"--generate 512 leaves no position.*max_position_embeddings 512", [out])


@call("trace --seq-len 0")
def _(env, tmp):
    from routelens import trace

    return Call(lambda: trace(str(env.model), [f"web={env.corpus}"], tmp / "t", seq_len=0), r"--seq-len")


# -- routelens.report.inputs.build_report ---------------------------------------------------------
def reported(env: Env, out: Path, **inputs):
    from routelens.report.inputs import build_report

    return lambda: build_report(env.trace, out, progress=False, **inputs)


@call("report --analysis of another trace")
def _(env, tmp):
    analysis = json.loads(env.analysis.read_text())
    other = write(tmp / "other.json", json.dumps({**analysis, "meta": {**analysis["meta"], "tokens": 3}}))
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, analysis=other), r"tokens=3.*analysis of this trace", [out])


@call("report --cache of another trace")
def _(env, tmp):
    cache = write(tmp / "c.json", json.dumps({"cache": {"lru": {}}, "cache_meta": {"tokens": 5}}))
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, analysis=env.analysis, cache=cache), r"tokens=5", [out])


@call("report --analysis holding a list")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, analysis=write(tmp / "a.json", "[1, 2]")), r"holds a list", [out])


@call("report --balance not JSON")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, balance=write(tmp / "b.json", b"\xff\xfe not json")), r"not valid JSON", [out])


@call("report -o under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "r.html")
    return Call(reported(env, out, analysis=env.analysis), re.escape(str(blocker)), [blocker])


@call("report --layers not a layer")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, analysis=env.analysis, layers="9"), r"--layers 9", [out])


@call("report --figure-formats not a format")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Call(
        reported(env, out, analysis=env.analysis, figure_formats="png,jpg"),
        r"--figure-formats 'jpg' is not a figure format",
        [out],
    )


@call("report --layers not a list")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, analysis=env.analysis, layers="a,b"), r"--layers 'a,b'", [out])


# -- routelens.simulate, analysis, info and export: the JSON file each writes ----------------------
@call("simulate cache --json in a missing folder")
def _(env, tmp):
    from routelens.simulate import simulate_cache

    path = tmp / "missing" / "c.json"
    return Call(lambda: simulate_cache(env.trace, capacities=(2,), json_path=path), r"missing does not exist")


@call("simulate all --json in a missing folder")
def _(env, tmp):
    from routelens.simulate import simulate_all

    path = tmp / "missing" / "s.json"
    return Call(lambda: simulate_all(env.trace, devices=2, json_path=path), r"missing does not exist")


@call("simulate all --json under a file")
def _(env, tmp):
    from routelens.simulate import simulate_all

    out, blocker = under_a_file(tmp, "s.json")
    return Call(lambda: simulate_all(env.trace, devices=2, json_path=out), re.escape(str(blocker)), [blocker])


@call("analyze --json under a file")
def _(env, tmp):
    from routelens.analysis import write_json

    out, blocker = under_a_file(tmp, "a.json")
    result = json.loads(env.analysis.read_text())
    return Call(lambda: write_json(result, out), re.escape(str(blocker)), [blocker])


@call("export placement slots that do not divide")
def _(env, tmp):
    from routelens.engines.placement import export_placement

    out = tmp / "p.json"
    return Call(
        lambda: export_placement(env.trace, out, devices=7, progress=False), r"--devices 7 does not divide", [out]
    )


@call("export load --out under a file")
def _(env, tmp):
    from routelens.engines.export import export_load

    out, blocker = under_a_file(tmp, "l.json")
    return Call(lambda: export_load(env.trace, out, progress=False), re.escape(str(blocker)), [blocker])


# -- routelens.capture: families --verify ---------------------------------------------------------
@call("families --verify an unknown model type")
def _(env, tmp):
    from routelens.capture.verify import verify_families

    return Call(lambda: verify_families(["mixtral", "no_such_family"]), r"no_such_family is not a MoE family")


# -- the rest of routelens.trace: options the config refuses, damaged models ------------------------
@call("trace --device foo")
def _(env, tmp):
    return Call(traced(env, tmp / "t", device="foo"), r"--device foo.*cpu")


@call("trace --dtype foo")
def _(env, tmp):
    return Call(traced(env, tmp / "t", dtype="foo"), r"--dtype.*foo")


for _damage, _fragment in MODEL_DAMAGE.items():

    def _trace_model(env, tmp, _damage=_damage, _fragment=_fragment):
        model = copy_model(env, tmp / "m", _damage)
        return Call(traced(env, tmp / "t", model=model), _fragment, [model])

    call(f"trace {_damage}")(_trace_model)


# -- the functions that read traces, each given the CLI case's damaged trace ------------------------
def _write_json(payload, path: Path, **fmt):
    from routelens.atomic import write_json

    return write_json(path, payload, what="--json", **fmt)


def _summary(env: Env, t: Path, tmp: Path):
    from routelens.trace.summary import summarize

    return lambda: summarize(t)


def _analysis(env: Env, t: Path, tmp: Path):
    from routelens.analysis import analyze, write_json

    out = old_output(tmp / "a.json")
    return lambda: write_json(analyze(t, progress=False), out)


def _simulated(what: str, file: str, **settings):
    def build(env: Env, t: Path, tmp: Path):
        from routelens import simulate

        out = old_output(tmp / file)
        return lambda: getattr(simulate, what)(t, json_path=out, **settings)

    return build


def _report(env: Env, t: Path, tmp: Path):
    from routelens.report.inputs import build_report

    out = old_output(tmp / "r.html")
    return lambda: build_report(t, out, progress=False)


def _compared(env: Env, t: Path, tmp: Path):
    from routelens.analysis.compare import compare_traces

    out = old_output(tmp / "cmp.json")
    return lambda: _write_json(compare_traces(env.trace, t, progress=False), out)


def _importance(env: Env, t: Path, tmp: Path):
    from routelens.pruning import expert_importance

    out = old_output(tmp / "i.json")
    return lambda: _write_json(expert_importance(t, progress=False), out)


def _exported(env: Env, t: Path, tmp: Path):
    from routelens.engines.export import export_load

    out = old_output(tmp / "l.json")
    return lambda: export_load(t, out, progress=False)


def _saturation(env: Env, t: Path, tmp: Path):
    from routelens.analysis import router_saturation

    return lambda: router_saturation([env.trace, t], progress=False)


def _pruned(env: Env, t: Path, tmp: Path):
    return pruned(env.model, t, tmp / "p")


# {command: (the library call on trace t, the outputs the CLI case watches)}, as READERS in the CLI suite
LIBRARY_READERS: dict[str, tuple[Callable[[Env, Path, Path], Callable[[], object]], list[str]]] = {
    "info": (_summary, []),
    "analyze": (_analysis, ["a.json"]),
    "simulate cache": (_simulated("simulate_cache", "c.json"), ["c.json"]),
    "simulate balance": (_simulated("simulate_balance", "b.json", devices=2), ["b.json"]),
    "simulate all": (_simulated("simulate_all", "s.json", devices=2), ["s.json"]),
    "report": (_report, ["r.html"]),
    "compare": (_compared, ["cmp.json"]),
    "importance": (_importance, ["i.json"]),
    "export load": (_exported, ["l.json"]),
    "saturation": (_saturation, []),
    "prune": (_pruned, ["p"]),
}

for _cmd, _damage in READER_DAMAGE:

    def _reader(env, tmp, _cmd=_cmd, _damage=_damage):
        t = copy_trace(env, tmp / "trace", _damage)
        build, outputs = LIBRARY_READERS[_cmd]
        return Call(build(env, t, tmp), TRACE_DAMAGE[_damage], [t, *(tmp / o for o in outputs)])

    call(f"{_cmd} {_damage}")(_reader)


@call("report malformed vocab.json")
def _(env, tmp):
    from routelens.report.inputs import build_report

    t = copy_trace(env, tmp / "trace", "vocab")
    out = old_output(tmp / "r.html")
    return Call(lambda: build_report(t, out, analysis=env.analysis, progress=False), r"vocab\.json", [t, out])


@call("analyze malformed vocab.json")
def _(env, tmp):
    from routelens.analysis import analyze

    t = copy_trace(env, tmp / "trace", "vocab")
    return Call(lambda: analyze(t, bootstrap=0, progress=False), r"vocab\.json", [t])


@call("report --json of another trace")
def _(env, tmp):
    from routelens.analysis import analyze, write_json

    other = write_json(analyze(env.other, bootstrap=0, progress=False), tmp / "o.json")
    out = old_output(tmp / "r.html")
    return Call(reported(env, out, json_paths=[other]), r"--json .*o\.json", [out])


@call("simulate cache --capacity 0")
def _(env, tmp):
    from routelens.simulate import simulate_cache

    return Call(lambda: simulate_cache(env.trace, capacities=(0,)), r"capacity")


@call("simulate balance --devices 0")
def _(env, tmp):
    from routelens.simulate import simulate_balance

    return Call(lambda: simulate_balance(env.trace, devices=0), r"devices")


@call("compare traces of other shapes")
def _(env, tmp):
    from routelens.analysis.compare import compare_traces

    return Call(lambda: compare_traces(env.trace, env.other, progress=False), r"layers|experts|tokens|same")


@call("replay --batch-size 0")
def _(env, tmp):
    from routelens.analysis.replay_report import replay_report

    return Call(
        lambda: replay_report(str(env.model), env.trace, tmp / "r.json", batch_size=0, progress=False),
        r"batch_size 0 is not positive",
    )


@call("info not a trace")
def _(env, tmp):
    from routelens.trace.summary import summarize

    return Call(lambda: summarize(tmp), r"no routelens trace")


# -- routelens.training: inspect_model and evaluate -------------------------------------------------
def inspected(model: Path, top_k: int | None = None):
    from routelens.training.params import inspect_model

    return lambda: inspect_model(model, top_k=top_k)


for _damage in ("config not json", "top_k too large"):

    def _inspect(env, tmp, _damage=_damage):
        model = copy_model(env, tmp / "m", _damage)
        return Call(inspected(model), MODEL_DAMAGE[_damage], [model])

    call(f"inspect {_damage}")(_inspect)


@call("inspect missing model")
def _(env, tmp):
    return Call(inspected(tmp / "nowhere"), r"nowhere")


@call("inspect --top-k beyond the experts")
def _(env, tmp):
    return Call(inspected(env.model, top_k=9), r"top-k 9")


def evaluated(env: Env, model: Path | None = None, corpus: str | None = None, **overrides):
    from routelens.training.evaluate import evaluate

    specs = [corpus or f"web={env.corpus}"]
    return lambda: evaluate(model or env.model, specs, seq_len=32, progress=False, **overrides)


for _damage in ("corrupt weights", "no tokenizer", "experts disagree"):

    def _eval_model(env, tmp, _damage=_damage):
        model = copy_model(env, tmp / "m", _damage)
        return Call(evaluated(env, model=model), MODEL_DAMAGE[_damage], [model])

    call(f"eval {_damage}")(_eval_model)


for _name in ("latin-1 jsonl", "int parquet"):

    def _eval_corpus(env, tmp, _name=_name):
        return Call(evaluated(env, corpus=bad_corpora(tmp)[_name]), CORPUS_FRAGMENT[_name], [env.model])

    call(f"eval {_name} corpus")(_eval_corpus)


@call("eval --top-k beyond the experts")
def _(env, tmp):
    return Call(evaluated(env, top_k=9), r"top-k 9")


@call("eval --json under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "e.json")
    return Call(lambda: _write_json({"loss": 1.0}, out, indent=2, allow_nan=True), re.escape(str(blocker)), [blocker])


# -- routelens.pruning: ablate and prune ------------------------------------------------------------
def ablated(env: Env, corpus: str, experts: list[str]):
    from routelens.pruning import ablate

    return lambda: ablate(env.model, [corpus], experts=experts, progress=False)


@call("ablate bad --expert")
def _(env, tmp):
    return Call(ablated(env, f"web={env.corpus}", ["zero:one"]), r"zero:one")


@call("ablate latin-1 txt corpus")
def _(env, tmp):
    return Call(ablated(env, bad_corpora(tmp)["latin-1 txt"], ["0:1"]), CORPUS_FRAGMENT["latin-1 txt"])


def pruned(model: Path, trace: Path, out: Path, keep: int = 4):
    from routelens.pruning import prune

    return lambda: prune(model, trace, out, keep=keep, progress=False)


@call("prune --keep beyond the experts")
def _(env, tmp):
    return Call(pruned(env.model, env.trace, tmp / "p", keep=9), r"--keep 9", [tmp / "p"])


@call("prune --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Call(pruned(env.model, env.trace, out), re.escape(str(blocker)), [blocker])


@call("prune corrupt weights")
def _(env, tmp):
    model = copy_model(env, tmp / "m", "corrupt weights")
    return Call(pruned(model, env.trace, tmp / "p"), r"model\.safetensors", [model, tmp / "p"])


# -- routelens.engines.import_engine ----------------------------------------------------------------
def imported(engine: str, file: Path, env: Env, out: Path):
    from routelens.engines import import_engine

    return lambda: import_engine(engine, file, env.model, out, progress=False)


@call("import vllm binary file")
def _(env, tmp):
    file = write(tmp / "r.jsonl", bytes(range(256)))
    return Call(imported("vllm", file, env, tmp / "t"), r"r\.jsonl", [tmp / "t"])


@call("import sglang crafted pickle")
def _(env, tmp):
    file = write(tmp / "r.pt", b"\x80\x04cos\nsystem\n(S'touch PWNED'\ntR.")
    return Call(imported("sglang", file, env, tmp / "t"), r"r\.pt", [tmp / "t"])


@call("import vllm --out under a file")
def _(env, tmp):
    file = write(tmp / "r.jsonl", "")
    out, blocker = under_a_file(tmp)
    return Call(imported("vllm", file, env, out), r"file|r\.jsonl", [blocker])


@call("import vllm pickled npy routing")
def _(env, tmp):
    from tests.reliability.test_bad_input import pickled_npy_line

    file = write(tmp / "r.jsonl", pickled_npy_line())
    return Call(imported("vllm", file, env, tmp / "t"), r"line 1.*pickle", [tmp / "t"])


@call("import sglang-recorder empty folder")
def _(env, tmp):
    (tmp / "run").mkdir()
    return Call(imported("sglang-recorder", tmp / "run", env, tmp / "t"), r"expert_distribution_recorder", [tmp / "t"])


# -- routelens.training: upcycle and train --------------------------------------------------------
def upcycled(dense: Path, out: Path, top_k: int = 1):
    from routelens.training.upcycle import upcycle

    return lambda: upcycle(dense, out, num_experts=2, top_k=top_k)


@call("upcycle missing dense model")
def _(env, tmp):
    return Call(upcycled(tmp / "dense", tmp / "u"), r"dense")


@call("upcycle --top-k beyond the experts")
def _(env, tmp):
    return Call(upcycled(env.model, tmp / "u", top_k=3), r"top-k 3")


@call("upcycle --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Call(upcycled(env.model, out), re.escape(str(blocker)), [blocker])


TINY = dict(steps=1, num_experts=2, top_k=1, hidden=16, heads=2, num_layers=1, seq_len=16, batch_size=2, vocab_size=280)


def trained(corpus: str, out: Path, **overrides):
    from routelens.training.train import train

    return lambda: train([corpus], out, progress=False, **{**TINY, **overrides})


@call("train --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Call(trained(f"web={env.corpus}", out), re.escape(str(blocker)), [blocker])


@call("train --top-k beyond the experts")
def _(env, tmp):
    return Call(trained(f"web={env.corpus}", tmp / "m", top_k=3), r"top-k 3")


@call("train latin-1 txt corpus")
def _(env, tmp):
    out = tmp / "m"
    return Call(trained(bad_corpora(tmp)["latin-1 txt"], out), CORPUS_FRAGMENT["latin-1 txt"], [out])


for _name in ("latin-1 jsonl", "int parquet", "binary txt"):

    def _train_corpus(env, tmp, _name=_name):
        out = tmp / "m"
        return Call(trained(bad_corpora(tmp)[_name], out), CORPUS_FRAGMENT[_name], [out])

    call(f"train {_name} corpus")(_train_corpus)


@call("train --init corrupt weights")
def _(env, tmp):
    model = copy_model(env, tmp / "init", "corrupt weights")
    return Call(trained(f"web={env.corpus}", tmp / "m", init=str(model)), r"model\.safetensors", [model])


@call("train --bias-update-rate on a family without a selection bias")
def _(env, tmp):
    out = tmp / "m"
    run = trained(f"web={env.corpus}", out, architecture="olmoe", bias_update_rate=0.01)
    return Call(run, r"olmoe has no selection bias to update", [out])


@call("train --init of another architecture")
def _(env, tmp):
    out = tmp / "m"
    run = trained(f"web={env.corpus}", out, init=str(env.model), architecture="olmoe")
    return Call(run, r"is a MixtralForCausalLM; --architecture olmoe trains a OlmoeForCausalLM", [out, env.model])


# -- corpus builtin and demo ----------------------------------------------------------------------
@call("corpus builtin --out under a file")
def _(env, tmp):
    from routelens.corpus.builtin import write_builtin_corpus

    out, blocker = under_a_file(tmp)
    return Call(lambda: write_builtin_corpus(out, size_bytes=1000), re.escape(str(blocker)), [blocker])


@call("corpus builtin --size-kb 0")
def _(env, tmp):
    from routelens.corpus.builtin import write_builtin_corpus

    out = tmp / "c"
    return Call(lambda: write_builtin_corpus(out, size_bytes=0), r"--size-kb 0", [out])


@call("demo --out under a file")
def _(env, tmp):
    from routelens.demo import run_demo

    out, blocker = under_a_file(tmp)
    return Call(lambda: run_demo(out=out, progress=False), re.escape(str(blocker)), [blocker])


@call("families --json under a file")
def _(env, tmp):
    from routelens.atomic import write_json
    from routelens.capture.listing import family_rows

    out, blocker = under_a_file(tmp, "f.json")
    payload = [r.to_json() for r in family_rows()]
    return Call(
        lambda: write_json(out, payload, indent=2, newline=True, what="--json"), re.escape(str(blocker)), [blocker]
    )


@pytest.mark.parametrize("name", list(CALLS))
def test_library_refuses_bad_input_as_the_cli_does(env, tmp_path, name):
    c = CALLS[name](env, tmp_path)
    watch = [env.trace, env.model, env.corpus, *c.watch]
    before = {p: checksum(p) for p in watch}
    with pytest.raises(RoutelensError) as info:
        c.run()
    message = str(info.value)
    assert re.search(c.fragment, message, re.S), message
    assert "\n" not in message.strip(), message
    assert {p: checksum(p) for p in watch} == before, "a pre-existing file changed"


# Cases of the CLI suite with no library counterpart (pure command-line parsing), each with the reason:
# none today, every refusal of the CLI suite happens in the library function the command calls.
CLI_ONLY: dict[str, str] = {}
# Library calls with no CLI case of their own name, each with the reason.
LIBRARY_ONLY: dict[str, str] = {
    "report --layers not a list": "the CLI suite checks --layers with a layer that is not one (report --layers not a layer)",
}


def test_every_cli_case_has_a_library_call_or_a_reason():
    """A new CLI bad-input case needs its library mirror here (or a CLI_ONLY reason)."""
    assert set(LIBRARY_ONLY) <= set(CALLS) and not set(LIBRARY_ONLY) & set(CASES)
    assert not set(CLI_ONLY) & set(CALLS), "a CLI-only case has a library call after all"
    assert set(CASES) == (set(CALLS) - set(LIBRARY_ONLY)) | set(CLI_ONLY)


# -- the lock, taken by the library function itself ------------------------------------------------
HOLD = """
import sys, time
from routelens.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def locked_calls(env: Env, tmp: Path) -> dict[str, tuple[Path, Callable[[], object]]]:
    """{what the lock message names: (the output, the library call into it)}."""
    from routelens.corpus.builtin import write_builtin_corpus
    from routelens.demo import run_demo
    from routelens.report import write_report
    from routelens.report.inputs import build_report

    page = tmp / "r.html"
    return {
        "trace": (tmp / "t", traced(env, tmp / "t")),
        "report": (page, lambda: build_report(env.trace, page, analysis=env.analysis, progress=False)),
        "report ": (page, lambda: write_report(env.trace, json.loads(env.analysis.read_text()), page, progress=False)),
        "upcycle": (tmp / "u", upcycled(env.model, tmp / "u")),
        "train": (tmp / "m", trained(f"web={env.corpus}", tmp / "m")),
        "corpus builtin": (tmp / "c", lambda: write_builtin_corpus(tmp / "c", size_bytes=1000)),
        "demo": (tmp / "d", lambda: run_demo(out=tmp / "d", progress=False)),
    }


@pytest.mark.parametrize("what", ["trace", "report", "report ", "upcycle", "train", "corpus builtin", "demo"])
def test_library_call_into_a_locked_output_is_refused_as_the_cli_is(env, tmp_path, what):
    out, run = locked_calls(env, tmp_path)[what]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError) as info:
            run()
        # the words of the CLI's refusal (routelens.lock), naming the holder and the command
        expected = (
            f"{out} is in use by process {holder.pid} (another routelens {what.strip()}); wait for it to finish "
            "or write to another location."
        )
        assert str(info.value) == expected
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
