"""The public API (`routelens/__init__.py`) and its documentation (docs/api.md) stay true:
`import routelens` loads no heavy dependency, every public name resolves and has a section whose
signature is the function's own, and every example in docs/api.md runs and its asserts hold."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import routelens

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"
HEAVY = ("torch", "transformers", "numba", "pyarrow")


# -- the document ------------------------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """`### \\`name\\`` heading -> the text up to the next heading."""
    parts = re.split(r"^#{2,3} ", text, flags=re.M)
    found = {}
    for part in parts[1:]:
        head, _, body = part.partition("\n")
        if m := re.fullmatch(r"`([\w.]+)`", head.strip()):
            found[m.group(1)] = body
    return found


def examples(text: str) -> list[tuple[str, str]]:
    """(section heading, code) of every ```python block, in document order."""
    out, heading = [], ""
    for m in re.finditer(r"^#{2,3} ([^\n]*)$|^```python\n(.*?)^```", text, flags=re.M | re.S):
        if m.group(1) is not None:
            heading = m.group(1).strip()
        else:
            out.append((heading, m.group(2)))
    return out


def _default(value) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, tuple):
        inner = ", ".join(map(_default, value))
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, Path):
        return f"Path({str(value)!r})"
    return repr(value)


def _annotation(value) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def signature_text(name: str, obj) -> str:
    """The signature of a public name as docs/api.md shows it: one parameter a line."""
    if isinstance(obj, types.ModuleType):  # routelens.trace: the package is the function
        obj = obj.trace
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        base = next(b.__name__ for b in obj.__mro__[1:] if b.__module__ == "enum")
        return "\n".join([f"class {name}({base}):", *(f"    {m.name} = {m.value!r}" for m in obj)])
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return f"class {name}({obj.__mro__[1].__name__})"
    sig = inspect.signature(obj)
    lines, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            lines.append("*")
            star = True
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        star = star or p.kind is p.VAR_POSITIONAL
        text = prefix + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {_default(p.default)}"
        lines.append(text)
    head = f"@dataclass\nclass {name}" if dataclasses.is_dataclass(obj) else name
    if isinstance(obj, type) and not dataclasses.is_dataclass(obj):
        head = f"class {name}"
    ret = ""
    if not isinstance(obj, type) and sig.return_annotation is not sig.empty:
        ret = f" -> {_annotation(sig.return_annotation)}"
    if not lines:
        return f"{head}(){ret}"
    return f"{head}(\n" + "".join(f"    {line},\n" for line in lines) + f"){ret}"


def documented_signature(body: str) -> str | None:
    m = re.match(r"\s*```text\n(.*?)\n```", body, flags=re.S)
    return m.group(1) if m else None


TEXT = API_MD.read_text()
SECTIONS = sections(TEXT)
PUBLIC = [n for n in routelens.__all__ if n != "__version__"]


# -- the package -------------------------------------------------------------------------------------


def test_import_routelens_is_light():
    code = (
        "import json, sys, routelens\n"
        "routelens.__version__, routelens.RoutelensError, dir(routelens)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    loaded = {m.split(".")[0] for m in json.loads(out)}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_every_public_name_resolves():
    assert routelens.__all__ == sorted(set(routelens.__all__))
    assert set(routelens.__all__) <= set(dir(routelens))
    for name in routelens.__all__:
        assert getattr(routelens, name) is not None, name
    assert callable(routelens.trace) and isinstance(routelens.trace, types.ModuleType)
    assert routelens.trace.TraceConfig is routelens.TraceConfig
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        routelens.nothing  # noqa: B018  (the attribute access is the test)


def test_every_public_name_is_documented_with_its_signature():
    missing = [n for n in routelens.__all__ if n not in SECTIONS]
    assert not missing, f"docs/api.md has no section for {missing}"
    assert set(SECTIONS) <= set(routelens.__all__), sorted(set(SECTIONS) - set(routelens.__all__))
    stale = [n for n in PUBLIC if documented_signature(SECTIONS[n]) != signature_text(n, getattr(routelens, n))]
    assert not stale, f"signatures in docs/api.md differ from the code for {stale}; regenerate them"
    no_example = [n for n in routelens.__all__ if "```python" not in SECTIONS[n]]
    assert not no_example, f"no example for {no_example}"


# -- the examples ------------------------------------------------------------------------------------


def _is_slow(code: str) -> bool:
    return code.startswith("# slow")


def test_every_example_asserts_something():
    weak = [heading for heading, code in examples(TEXT) if not re.search(r"^\s*assert ", code, flags=re.M)]
    assert not weak, f"examples without an assert: {weak}"


def _run(blocks: list[tuple[str, str]], folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__api_example__"}
    for heading, code in blocks:
        try:
            exec(compile(code, f"docs/api.md ({heading})", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"the example of {heading} failed: {type(exc).__name__}: {exc}") from exc


@pytest.mark.slow  # about a minute: the tiny model's training and the report's figures
def test_the_examples_run_in_order(tmp_path, monkeypatch):
    """All examples but `# slow` ones (the demo), in one namespace, in an empty folder."""
    _run([(h, c) for h, c in examples(TEXT) if not _is_slow(c)], tmp_path, monkeypatch)


def test_the_demo_example_holds_for_the_suites_demo_run(demo_run, tmp_path, monkeypatch):
    """The `# slow` example (run_demo) is the suite's own tiny demo run (tests/conftest.py), which
    other tests already pay for: its call must ask for exactly those settings, and its assertions
    must hold for that run's output."""
    from tests.conftest import DEMO_TINY

    _, page = demo_run
    calls = []

    def run_demo(config=None, **overrides):
        calls.append(overrides)
        assert config is None and {k: v for k, v in overrides.items() if k != "out"} == DEMO_TINY, overrides
        return page

    monkeypatch.setattr(routelens, "run_demo", run_demo)
    slow = [(h, "import routelens\n" + c) for h, c in examples(TEXT) if _is_slow(c)]
    assert slow and all("run_demo" in h for h, _ in slow), slow
    _run(slow, tmp_path, monkeypatch)
    assert len(calls) == len(slow)


def test_all_lists_every_lazy_name():
    assert set(routelens.__all__) == {
        *routelens._FROM,
        "RoutelensError",
        "UnsupportedModelError",
        "__version__",
        "trace",
    }


# what the commands import besides library calls: formatting, progress bars and atomic writes
CLI_HELPERS = {"EXACT", "console", "progress_bar", "dumps", "write_text"}


def test_the_library_function_of_every_command_is_public():
    """A command is parse -> call -> print: what it imports when it runs is the call, and that is
    part of the public API (read with `ast` from cli/*_cmd.py, the imports inside functions)."""
    import ast

    called = set()
    for path in sorted((ROOT / "src" / "routelens" / "cli").glob("*_cmd.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("routelens"):
                        called |= {a.name for a in node.names}
    assert not called - CLI_HELPERS - set(routelens.__all__), sorted(called - CLI_HELPERS - set(routelens.__all__))
