"""The package's import graph: the library never imports its front end (`routelens.cli`), and no
two modules import each other, directly or around a cycle. Read from the source with `ast`, so a
lazy import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "routelens"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The routelens modules that `path` imports (a `from pkg import name` of a submodule counts
    as that submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known) for f in files}


def test_library_never_imports_the_cli():
    offenders = {
        mod: sorted(m for m in deps if m == "routelens.cli" or m.startswith("routelens.cli."))
        for mod, deps in import_graph().items()
        if not mod.startswith("routelens.cli")
    }
    assert not {m: d for m, d in offenders.items() if d}, offenders


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among modules (a package's `__init__` importing its own submodules is not one: the
    edge from a submodule to its parent package is how Python loads it, so those are dropped)."""
    edges = {mod: {d for d in deps if not mod.startswith(d + ".")} for mod, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# -- packages and layers (issue 23) ----------------------------------------------------------------
# From the ground up; a package imports only packages of lower layers. The root modules (errors,
# config, ...) are packages of their own here.
LAYERS = [
    {"errors", "version"},
    {"config", "atomic", "lock", "progress"},
    {"models"},
    {"capture", "corpus"},
    {"store"},
    {"trace", "synthetic"},
    {"analysis", "simulate", "engines", "training", "pruning"},
    {"report"},
    {"demo"},
    {"<public>"},  # routelens/__init__.py: the public API
    {"cli"},
]


def package_of(module: str) -> str:
    parts = module.split(".")
    return "<public>" if len(parts) == 1 else parts[1]


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, deps in import_graph().items():
        me = package_of(mod)
        graph.setdefault(me, set()).update(p for p in map(package_of, deps) if p != me)
    return graph


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_every_package_has_a_layer():
    assert not [p for p in package_graph() if not any(p in layer for layer in LAYERS)]


def test_packages_import_only_what_stands_below_them():
    upward = {(me, dep) for me, deps in package_graph().items() for dep in deps if layer_of(dep) >= layer_of(me)}
    assert not upward, sorted(upward)


def test_no_import_cycle_between_packages():
    cycle = find_cycle(package_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_model_layer_stands_on_the_foundation_only():
    assert package_graph()["models"] <= LAYERS[0] | LAYERS[1]


def _private_imports() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = package_of(module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("routelens"):
                if package_of(node.module) == me and node.module != "routelens":
                    continue
                found += [(module_name(path), node.module, a.name) for a in node.names if a.name.startswith("_")]
    return found


def test_no_package_imports_another_packages_private_names():
    assert _private_imports() == []


HOOK_CALLS = {
    "register_forward_hook",
    "register_forward_pre_hook",
    "register_full_backward_hook",
    "register_full_backward_pre_hook",
    "register_module_forward_hook",
    "register_module_forward_pre_hook",
}


def hook_registrations(root: Path = PACKAGE) -> list[str]:
    """`file:line` of every call registering a module hook, outside routelens/models."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if (root / "models") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in HOOK_CALLS:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_hooks_are_registered_only_in_the_model_layer():
    assert hook_registrations() == []


def test_the_hook_scan_finds_a_planted_hook(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "hooks.py").write_text("m.register_forward_hook(f)\n")
    (tmp_path / "reader.py").write_text("x = 1\nmodule.experts.register_forward_pre_hook(f, with_kwargs=True)\n")
    assert hook_registrations(tmp_path) == ["reader.py:2"]
