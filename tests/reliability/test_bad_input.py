"""The bad-input suite (issue 17): every command given a broken input, a damaged trace or model,
or an output it cannot write, answers with exit code 2 and one line that names the problem and the
fix, never a traceback, and leaves what was on disk before (its inputs and any earlier output)
byte for byte as it was.

Each case builds its bad input from the session's tiny model, corpus and trace (tests/reliability/
conftest.py) and says which words the message must hold."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.reliability.conftest import Env, checksum, copy_model, copy_trace

# A one-line message says how to fix the problem as well as what it is.
FIX = re.compile(
    r"\b(re-run|re-create|rerun|pass|give|choose|use|write|delete|remove|install|upgrade|pick|check|set|"
    r"add|wait|save|rename|convert|read|trace|run|get|keep|drop|one of|expected|must|need|restore|dump|e\.g\.)",
    re.I,
)


@dataclass
class Case:
    args: list[str]
    fragment: str  # a regex the message must match (the problem, named)
    watch: list[Path] = field(default_factory=list)  # pre-existing outputs and inputs that must not change


Builder = Callable[[Env, Path], Case]
CASES: dict[str, Builder] = {}


def case(name: str):
    def register(fn: Builder) -> Builder:
        assert name not in CASES
        CASES[name] = fn
        return fn

    return register


def under_a_file(tmp: Path, name: str = "out") -> tuple[Path, Path]:
    blocker = tmp / "file"
    blocker.write_text("a file, not a folder")
    return blocker / name, blocker


def old_output(path: Path, text: str = "earlier output") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix:
        path.write_text(text)
    else:
        path.mkdir()
        (path / "keep.txt").write_text(text)
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


LATIN1 = "caf\xe9 cr\xe8me br\xfbl\xe9e\n\nna\xefve fa\xe7ade\n".encode("latin-1")


def bad_corpora(tmp: Path) -> dict[str, str]:
    """NAME=PATH specs of corpora a reader must refuse."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp / "ints.parquet")
    jsonl = write(tmp / "l.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"))
    conllu = write(tmp / "l.conllu", "1\tcaf\xe9\t_\tNOUN\t_\t_\t0\troot\t_\t_\n\n".encode("latin-1"))
    return {
        "latin-1 txt": f"web={write(tmp / 'l.txt', LATIN1)}",
        "latin-1 jsonl": f"web={jsonl}",
        "latin-1 conllu": f"web={conllu}",
        "binary txt": f"web={write(tmp / 'b.txt', bytes(range(256)) * 4)}",
        "int parquet": f"web={tmp / 'ints.parquet'}",
        "missing": f"web={tmp / 'nowhere.txt'}",
        "no name": str(tmp / "x.txt"),
    }


CORPUS_FRAGMENT = {
    "latin-1 txt": r"not UTF-8.*iconv",
    "latin-1 jsonl": r"not UTF-8.*iconv",
    "latin-1 conllu": r"not UTF-8.*iconv",
    "binary txt": r"UTF-8|binary",
    "int parquet": r"text.*(string|str)",
    "missing": r"nowhere\.txt",
    "no name": r"NAME=PATH",
}


# -- trace ---------------------------------------------------------------------------------------
def trace_case(
    env: Env, tmp: Path, *, model: Path | None = None, corpus: str | None = None, extra=(), out=None
) -> list[str]:
    out = out or tmp / "t"
    return [
        "trace",
        str(model or env.model),
        "--corpus",
        corpus or f"web={env.corpus}",
        "--out",
        str(out),
        "-q",
        "--seq-len",
        "32",
        *extra,
    ]


for _name in CORPUS_FRAGMENT:

    def _trace_corpus(env, tmp, _name=_name):
        out = tmp / "t"  # absent before, and must stay absent: nothing half-written
        return Case(trace_case(env, tmp, corpus=bad_corpora(tmp)[_name], out=out), CORPUS_FRAGMENT[_name], [out])

    case(f"trace {_name} corpus")(_trace_corpus)


@case("trace --device foo")
def _(env, tmp):
    return Case(trace_case(env, tmp, extra=["--device", "foo"]), r"--device foo.*cpu")


@case("trace --dtype foo")
def _(env, tmp):
    return Case(trace_case(env, tmp, extra=["--dtype", "foo"]), r"--dtype.*foo")


for _damage, _fragment in [
    ("corrupt weights", r"model\.safetensors"),
    ("truncated weights", r"model\.safetensors"),
    ("experts disagree", r"expert"),
    ("top_k too large", r"top.?k|experts_per_tok"),
    ("no tokenizer", r"tokenizer"),
    ("config not json", r"config\.json"),
]:

    def _trace_model(env, tmp, _damage=_damage, _fragment=_fragment):
        model = copy_model(env, tmp / "m", _damage)
        return Case(trace_case(env, tmp, model=model), _fragment, [model])

    case(f"trace {_damage}")(_trace_model)


@case("trace --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Case(trace_case(env, tmp, out=out), re.escape(str(blocker)), [blocker])


@case("trace --out is a file")
def _(env, tmp):
    out = write(tmp / "t", "mine")
    return Case(trace_case(env, tmp, out=out), r"is a file|not a (folder|directory)", [out])


@case("trace into another trace")
def _(env, tmp):
    out = copy_trace(env, tmp / "t")
    args = trace_case(env, tmp, out=out, extra=["--max-tokens", "40"])
    return Case(args, r"--overwrite", [out])


@case("trace --seq-len beyond the model")
def _(env, tmp):
    out = tmp / "t"
    args = [a if a != "32" else "4096" for a in trace_case(env, tmp, out=out)]
    return Case(args, r"--seq-len 4096 is beyond the model's max_position_embeddings 512", [out])


@case("trace --generate leaving no room for a prompt")
def _(env, tmp):
    out = tmp / "t"
    args = ["trace", str(env.model), "-c", f"web={env.corpus}", "-o", str(out), "-q", "--generate", "512"]
    return Case(args, r"--generate 512 leaves no position.*max_position_embeddings 512", [out])


@case("trace --seq-len 0")
def _(env, tmp):
    return Case(trace_case(env, tmp, extra=["--seq-len", "0"]), r"--seq-len")


# -- commands that read traces ------------------------------------------------------------------
TRACE_DAMAGE = {
    "zero-byte shard": r"part-00000\.parquet.*damaged",
    "truncated shard": r"part-00000\.parquet.*damaged",
    "corrupt shard": r"part-00000\.parquet.*damaged",
    "manifest list": r"not a routelens trace manifest",
    "manifest missing keys": r"manifest\.json lacks",
    "format 99": r"format_version 99.*upgrade",
    "manifest not json": r"not valid JSON",
}
READERS: dict[str, Callable[[Env, Path, Path], tuple[list[str], list[Path]]]] = {
    "info": lambda env, t, tmp: (["info", str(t)], []),
    "analyze": lambda env, t, tmp: (
        ["analyze", str(t), "--json", str(old_output(tmp / "a.json")), "-q"],
        [tmp / "a.json"],
    ),
    "simulate cache": lambda env, t, tmp: (
        ["simulate", "cache", str(t), "--json", str(old_output(tmp / "c.json"))],
        [tmp / "c.json"],
    ),
    "simulate balance": lambda env, t, tmp: (
        ["simulate", "balance", str(t), "-D", "2", "--json", str(old_output(tmp / "b.json"))],
        [tmp / "b.json"],
    ),
    "simulate all": lambda env, t, tmp: (
        ["simulate", "all", str(t), "-D", "2", "--json", str(old_output(tmp / "s.json"))],
        [tmp / "s.json"],
    ),
    "report": lambda env, t, tmp: (["report", str(t), "-o", str(old_output(tmp / "r.html")), "-q"], [tmp / "r.html"]),
    "compare": lambda env, t, tmp: (
        ["compare", str(env.trace), str(t), "--json", str(old_output(tmp / "cmp.json")), "-q"],
        [tmp / "cmp.json"],
    ),
    "importance": lambda env, t, tmp: (
        ["importance", str(t), "--json", str(old_output(tmp / "i.json")), "-q"],
        [tmp / "i.json"],
    ),
    "export load": lambda env, t, tmp: (
        ["export", "load", str(t), "-o", str(old_output(tmp / "l.json")), "-q"],
        [tmp / "l.json"],
    ),
    "saturation": lambda env, t, tmp: (["saturation", str(env.trace), str(t), "-q"], []),
    "prune": lambda env, t, tmp: (
        ["prune", str(env.model), "--trace", str(t), "--keep", "4", "-o", str(tmp / "p"), "-q"],
        [tmp / "p"],
    ),
}
# Every reader meets a damaged shard; the manifest faults once per reader that opens it differently.
READER_DAMAGE = [(cmd, d) for cmd in READERS for d in ("zero-byte shard", "truncated shard", "corrupt shard")]
READER_DAMAGE += [
    ("info", "manifest list"),
    ("analyze", "manifest missing keys"),
    ("info", "format 99"),
    ("simulate cache", "format 99"),
    ("report", "manifest not json"),
    ("importance", "manifest list"),
]
for _cmd, _damage in READER_DAMAGE:

    def _reader(env, tmp, _cmd=_cmd, _damage=_damage):
        t = copy_trace(env, tmp / "trace", _damage)
        args, watch = READERS[_cmd](env, t, tmp)
        return Case(args, TRACE_DAMAGE[_damage], [t, *watch])

    case(f"{_cmd} {_damage}")(_reader)


@case("report malformed vocab.json")
def _(env, tmp):
    t = copy_trace(env, tmp / "trace", "vocab")
    out = old_output(tmp / "r.html")
    return Case(["report", str(t), "-o", str(out), "-q", "--analysis", str(env.analysis)], r"vocab\.json", [t, out])


@case("analyze malformed vocab.json")
def _(env, tmp):
    t = copy_trace(env, tmp / "trace", "vocab")
    return Case(["analyze", str(t), "-q", "--bootstrap", "0"], r"vocab\.json", [t])


@case("report --analysis of another trace")
def _(env, tmp):
    other = tmp / "other.json"
    other.write_text(
        json.dumps(
            {
                **json.loads(env.analysis.read_text()),
                "meta": {**json.loads(env.analysis.read_text())["meta"], "tokens": 3},
            }
        )
    )
    out = old_output(tmp / "r.html")
    return Case(
        ["report", str(env.trace), "-o", str(out), "-q", "--analysis", str(other)],
        r"tokens=3.*analysis of this trace",
        [out],
    )


@case("report --json of another trace")
def _(env, tmp):
    run = CliRunner().invoke(app, ["analyze", str(env.other), "--json", str(tmp / "o.json"), "--bootstrap", "0", "-q"])
    assert run.exit_code == 0, run.output
    out = old_output(tmp / "r.html")
    return Case(
        ["report", str(env.trace), "-o", str(out), "-q", "--json", str(tmp / "o.json")], r"--json .*o\.json", [out]
    )


@case("report --cache of another trace")
def _(env, tmp):
    write(tmp / "c.json", json.dumps({"cache": {"lru": {}}, "cache_meta": {"tokens": 5}}))
    out = old_output(tmp / "r.html")
    return Case(
        [
            "report",
            str(env.trace),
            "-o",
            str(out),
            "-q",
            "--analysis",
            str(env.analysis),
            "--cache",
            str(tmp / "c.json"),
        ],
        r"tokens=5",
        [out],
    )


@case("report --analysis holding a list")
def _(env, tmp):
    write(tmp / "a.json", "[1, 2]")
    out = old_output(tmp / "r.html")
    return Case(
        ["report", str(env.trace), "-o", str(out), "-q", "--analysis", str(tmp / "a.json")], r"holds a list", [out]
    )


@case("report --balance not JSON")
def _(env, tmp):
    write(tmp / "b.json", b"\xff\xfe not json")
    out = old_output(tmp / "r.html")
    return Case(
        ["report", str(env.trace), "-o", str(out), "-q", "--balance", str(tmp / "b.json")], r"not valid JSON", [out]
    )


@case("report -o under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "r.html")
    return Case(
        ["report", str(env.trace), "-o", str(out), "-q", "--analysis", str(env.analysis)],
        re.escape(str(blocker)),
        [blocker],
    )


@case("report --layers not a layer")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Case(
        ["report", str(env.trace), "-o", str(out), "-q", "--analysis", str(env.analysis), "--layers", "9"],
        r"--layers 9",
        [out],
    )


@case("report --figure-formats not a format")
def _(env, tmp):
    out = old_output(tmp / "r.html")
    return Case(
        [
            "report",
            str(env.trace),
            "-o",
            str(out),
            "-q",
            "--analysis",
            str(env.analysis),
            "--figure-formats",
            "png,jpg",
        ],
        r"--figure-formats 'jpg' is not a figure format",
        [out],
    )


@case("analyze --json under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "a.json")
    return Case(["analyze", str(env.trace), "--json", str(out), "-q"], re.escape(str(blocker)), [blocker])


@case("simulate cache --capacity 0")
def _(env, tmp):
    return Case(["simulate", "cache", str(env.trace), "-C", "0"], r"capacity")


@case("simulate balance --devices 0")
def _(env, tmp):
    return Case(["simulate", "balance", str(env.trace), "-D", "0"], r"devices")


@case("simulate all --json under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "s.json")
    return Case(["simulate", "all", str(env.trace), "-D", "2", "--json", str(out)], re.escape(str(blocker)), [blocker])


@case("simulate cache --json in a missing folder")
def _(env, tmp):
    return Case(
        ["simulate", "cache", str(env.trace), "-C", "2", "--json", str(tmp / "missing" / "c.json")],
        r"missing does not exist",
        [tmp / "missing"],
    )


@case("simulate all --json in a missing folder")
def _(env, tmp):
    return Case(
        ["simulate", "all", str(env.trace), "-D", "2", "--json", str(tmp / "missing" / "s.json")],
        r"missing does not exist",
        [tmp / "missing"],
    )


@case("compare traces of other shapes")
def _(env, tmp):
    return Case(["compare", str(env.trace), str(env.other), "-q"], r"layers|experts|tokens|same")


@case("replay --batch-size 0")
def _(env, tmp):
    args = ["replay", str(env.model), "--trace", str(env.trace), "--out", str(tmp / "r.json"), "--batch-size", "0"]
    return Case([*args, "-q"], r"batch_size 0 is not positive")


@case("export load --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "l.json")
    return Case(["export", "load", str(env.trace), "-o", str(out), "-q"], re.escape(str(blocker)), [blocker])


@case("export placement slots that do not divide")
def _(env, tmp):
    out = tmp / "p.json"
    return Case(
        ["export", "placement", str(env.trace), "--devices", "7", "--redundant", "0", "-o", str(out), "-q"],
        r"--devices 7 does not divide",
        [out],
    )


@case("info not a trace")
def _(env, tmp):
    return Case(["info", str(tmp)], r"no routelens trace")


# -- commands that read models -------------------------------------------------------------------
for _damage, _fragment in [("config not json", r"config\.json"), ("top_k too large", r"top.?k|experts_per_tok")]:

    def _inspect(env, tmp, _damage=_damage, _fragment=_fragment):
        model = copy_model(env, tmp / "m", _damage)
        return Case(["inspect", str(model)], _fragment, [model])

    case(f"inspect {_damage}")(_inspect)


@case("inspect missing model")
def _(env, tmp):
    return Case(["inspect", str(tmp / "nowhere")], r"nowhere")


@case("inspect --top-k beyond the experts")
def _(env, tmp):
    return Case(["inspect", str(env.model), "--top-k", "9"], r"top-k 9")


def eval_case(env, tmp, model=None, corpus=None, extra=()) -> list[str]:
    return ["eval", str(model or env.model), "--corpus", corpus or f"web={env.corpus}", "-q", "--seq-len", "32", *extra]


for _damage, _fragment in [
    ("corrupt weights", r"model\.safetensors"),
    ("no tokenizer", r"tokenizer"),
    ("experts disagree", r"expert"),
]:

    def _eval_model(env, tmp, _damage=_damage, _fragment=_fragment):
        model = copy_model(env, tmp / "m", _damage)
        return Case(eval_case(env, tmp, model=model), _fragment, [model])

    case(f"eval {_damage}")(_eval_model)


for _name in ("latin-1 jsonl", "int parquet"):

    def _eval_corpus(env, tmp, _name=_name):
        return Case(eval_case(env, tmp, corpus=bad_corpora(tmp)[_name]), CORPUS_FRAGMENT[_name], [env.model])

    case(f"eval {_name} corpus")(_eval_corpus)


@case("eval --top-k beyond the experts")
def _(env, tmp):
    return Case(eval_case(env, tmp, extra=["--top-k", "9"]), r"top-k 9")


@case("eval --json under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "e.json")
    return Case(eval_case(env, tmp, extra=["--json", str(out)]), re.escape(str(blocker)), [blocker])


@case("ablate bad --expert")
def _(env, tmp):
    return Case(["ablate", str(env.model), "--corpus", f"web={env.corpus}", "-e", "zero:one", "-q"], r"zero:one")


@case("ablate latin-1 txt corpus")
def _(env, tmp):
    return Case(
        ["ablate", str(env.model), "--corpus", bad_corpora(tmp)["latin-1 txt"], "-e", "0:1", "-q"],
        CORPUS_FRAGMENT["latin-1 txt"],
    )


@case("prune --keep beyond the experts")
def _(env, tmp):
    out = tmp / "p"
    return Case(
        ["prune", str(env.model), "--trace", str(env.trace), "--keep", "9", "-o", str(out), "-q"], r"--keep 9", [out]
    )


@case("prune --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Case(
        ["prune", str(env.model), "--trace", str(env.trace), "--keep", "4", "-o", str(out), "-q"],
        re.escape(str(blocker)),
        [blocker],
    )


@case("prune corrupt weights")
def _(env, tmp):
    model = copy_model(env, tmp / "m", "corrupt weights")
    out = tmp / "p"
    return Case(
        ["prune", str(model), "--trace", str(env.trace), "--keep", "4", "-o", str(out), "-q"],
        r"model\.safetensors",
        [model, out],
    )


# -- import, upcycle, train, corpus, demo, families ----------------------------------------------
@case("import vllm binary file")
def _(env, tmp):
    write(tmp / "r.jsonl", bytes(range(256)))
    out = tmp / "t"
    return Case(
        ["import", "vllm", str(tmp / "r.jsonl"), "-m", str(env.model), "-o", str(out), "-q"], r"r\.jsonl", [out]
    )


@case("import sglang crafted pickle")
def _(env, tmp):
    write(tmp / "r.pt", b"\x80\x04cos\nsystem\n(S'touch PWNED'\ntR.")
    out = tmp / "t"
    return Case(["import", "sglang", str(tmp / "r.pt"), "-m", str(env.model), "-o", str(out), "-q"], r"r\.pt", [out])


@case("import vllm --out under a file")
def _(env, tmp):
    write(tmp / "r.jsonl", "")
    out, blocker = under_a_file(tmp)
    return Case(
        ["import", "vllm", str(tmp / "r.jsonl"), "-m", str(env.model), "-o", str(out), "-q"],
        r"file|r\.jsonl",
        [blocker],
    )


@case("import vllm pickled npy routing")
def _(env, tmp):
    write(tmp / "r.jsonl", pickled_npy_line())
    out = tmp / "t"
    return Case(
        ["import", "vllm", str(tmp / "r.jsonl"), "-m", str(env.model), "-o", str(out), "-q"], r"line 1.*pickle", [out]
    )


@case("import sglang-recorder empty folder")
def _(env, tmp):
    (tmp / "run").mkdir()
    out = tmp / "t"
    return Case(
        ["import", "sglang-recorder", str(tmp / "run"), "-m", str(env.model), "-o", str(out), "-q"],
        r"expert_distribution_recorder",
        [out],
    )


def pickled_npy_line() -> str:
    """A vLLM completions line whose routed_experts is .npy of an object array (a pickle inside)."""
    import base64
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([[[object()]]], dtype=object), allow_pickle=True)
    routed = base64.b64encode(buf.getvalue()).decode()
    return (
        json.dumps(
            {
                "id": "x",
                "choices": [{"index": 0, "prompt_token_ids": [1, 2], "token_ids": [3], "routed_experts": routed}],
            }
        )
        + "\n"
    )


@case("upcycle missing dense model")
def _(env, tmp):
    return Case(
        ["upcycle", str(tmp / "dense"), "--num-experts", "2", "--top-k", "1", "--out", str(tmp / "u")], r"dense"
    )


@case("upcycle --top-k beyond the experts")
def _(env, tmp):
    return Case(["upcycle", str(env.model), "--num-experts", "2", "--top-k", "3", "--out", str(tmp / "u")], r"top-k 3")


@case("upcycle --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Case(
        ["upcycle", str(env.model), "--num-experts", "2", "--top-k", "1", "--out", str(out)],
        re.escape(str(blocker)),
        [blocker],
    )


def train_case(tmp, corpus: str, out: Path, extra=()) -> list[str]:
    return [
        "train",
        "--corpus",
        corpus,
        "--out",
        str(out),
        "--steps",
        "1",
        "--num-experts",
        "2",
        "--top-k",
        "1",
        "--hidden",
        "16",
        "--heads",
        "2",
        "--num-layers",
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--vocab-size",
        "280",
        "-q",
        *extra,
    ]


for _name in ("latin-1 txt", "latin-1 jsonl", "int parquet", "binary txt"):

    def _train_corpus(env, tmp, _name=_name):
        out = tmp / "m"
        return Case(train_case(tmp, bad_corpora(tmp)[_name], out), CORPUS_FRAGMENT[_name], [out])

    case(f"train {_name} corpus")(_train_corpus)


@case("train --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Case(train_case(tmp, f"web={env.corpus}", out), re.escape(str(blocker)), [blocker])


@case("train --init corrupt weights")
def _(env, tmp):
    model = copy_model(env, tmp / "init", "corrupt weights")
    return Case(train_case(tmp, f"web={env.corpus}", tmp / "m", ["--init", str(model)]), r"model\.safetensors", [model])


@case("train --top-k beyond the experts")
def _(env, tmp):
    args = train_case(tmp, f"web={env.corpus}", tmp / "m")
    args[args.index("--top-k") + 1] = "3"
    return Case(args, r"top-k 3")


@case("train --bias-update-rate on a family without a selection bias")
def _(env, tmp):
    out = tmp / "m"
    return Case(
        train_case(tmp, f"web={env.corpus}", out, ["--architecture", "olmoe", "--bias-update-rate", "0.01"]),
        r"olmoe has no selection bias to update",
        [out],
    )


@case("train --init of another architecture")
def _(env, tmp):
    out = tmp / "m"
    return Case(
        train_case(tmp, f"web={env.corpus}", out, ["--init", str(env.model), "--architecture", "olmoe"]),
        r"is a MixtralForCausalLM; --architecture olmoe trains a OlmoeForCausalLM",
        [out, env.model],
    )


@case("corpus builtin --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Case(["corpus", "builtin", "--out", str(out), "--size-kb", "1"], re.escape(str(blocker)), [blocker])


@case("corpus builtin --size-kb 0")
def _(env, tmp):
    return Case(["corpus", "builtin", "--out", str(tmp / "c"), "--size-kb", "0"], r"--size-kb 0")


@case("demo --out under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp)
    return Case(["demo", "--out", str(out), "-q"], re.escape(str(blocker)), [blocker])


@case("families --json under a file")
def _(env, tmp):
    out, blocker = under_a_file(tmp, "f.json")
    return Case(["families", "--json", str(out)], re.escape(str(blocker)), [blocker])


@case("families --verify an unknown model type")
def _(env, tmp):
    return Case(["families", "--verify", "no_such_family"], r"no_such_family is not a MoE family")


def outcome(result) -> str:
    """ "clean", "traceback" or "wrong" (exit code other than 2, or more than one line)."""
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit) or "Traceback" in text:
        return "traceback"
    lines = [line for line in text.splitlines() if line.strip()]
    return "clean" if result.exit_code == 2 and len(lines) == 1 else "wrong"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(env, tmp_path, name):
    c = CASES[name](env, tmp_path)
    watch = [env.trace, env.model, env.corpus, *c.watch]
    before = {p: checksum(p) for p in watch}
    result = CliRunner().invoke(app, c.args)
    assert outcome(result) == "clean", (result.exit_code, result.output[-3000:], repr(result.exception))
    line = result.output.strip()
    assert re.search(c.fragment, line, re.S), line
    assert FIX.search(line.split(";", 1)[-1]), f"no fix named: {line}"
    assert {p: checksum(p) for p in watch} == before, "a pre-existing file changed"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60
