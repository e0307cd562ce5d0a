"""The bad-input suite, through the library: the functions the commands call refuse the same bad
inputs with a RoutelensError whose message matches the CLI case's fragment (tests/reliability/
test_bad_input.py), leave what was on disk as it was, and refuse an output whose lock another process
holds in the CLI's words. A Python user gets the command's guarantees, not only its users."""

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
from tests.reliability.conftest import Env, checksum, copy_trace
from tests.reliability.test_bad_input import CORPUS_FRAGMENT, bad_corpora, old_output, under_a_file, write


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
def traced(env: Env, out: Path, corpus: str | None = None, **overrides):
    from routelens import trace

    return lambda: trace(str(env.model), [corpus or f"web={env.corpus}"], out, seq_len=32, progress=False, **overrides)


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
