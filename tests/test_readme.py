"""The README's commands stay true: its first two commands set up a machine and run the demo and
the tests (CI runs the second one), and every `routelens` command line in it names a real command
with real flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines, pending = [], ""
    for block in blocks:
        for raw in block.splitlines():
            line = pending + raw.split("  #")[0].strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line:
                lines.append(line)
    return lines


def test_first_two_commands_are_demo_and_tests():
    first, second = bash_lines()[:2]
    assert first.startswith("pip install torch==2.13.0") and first.endswith("routelens demo")
    assert second.endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "torch==2.13.0" in ci


def routelens_invocations() -> list[list[str]]:
    out = []
    for line in bash_lines():
        for part in re.split(r"&&|;", line):
            words = shlex.split(part.strip())
            if words and words[0] == "routelens":
                out.append(words[1:])
    return out


@pytest.mark.parametrize("argv", routelens_invocations(), ids=lambda a: " ".join(a[:2]))
def test_readme_command_exists_with_its_flags(argv):
    path = [w for w in argv[:2] if not w.startswith("-") and "/" not in w and "." not in w and "=" not in w]
    # the command path is the leading words that are commands (e.g. `simulate cache`)
    result = CliRunner().invoke(app, [*path[:2], "--help"], env={"COLUMNS": "200"})
    if result.exit_code != 0:  # one word is a command, the second an argument
        result = CliRunner().invoke(app, [path[0], "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"routelens {' '.join(path)}: {result.output}"
    for flag in (w.split("=")[0] for w in argv if w.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.output), (
            f"{flag} not in `routelens {' '.join(path)} --help`"
        )


def all_command_paths() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_every_help_page_renders(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and "Usage" in result.output, result.output


def test_error_lines_keep_square_brackets(tmp_path, monkeypatch):
    from routelens.errors import RoutelensError

    def boom(*_a, **_k):
        raise RoutelensError("needs Ray; run: pip install 'routelens[ray]'")

    monkeypatch.setattr("routelens.trace.trace", boom)
    (tmp_path / "c.txt").write_text("hello\n")
    result = CliRunner().invoke(
        app, ["trace", str(tmp_path), "--corpus", f"a={tmp_path / 'c.txt'}", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "routelens[ray]" in result.output


def test_the_family_list_is_generated_from_routelens_families():
    """The block between the families markers is what `python -m routelens.capture.readme` writes
    for the transformers it names; on that version it must match exactly. On another version (a
    newer release before the pin moves, or the one before) what holds is checked instead: every
    family both list is routed by the same router class, and the block names a version the suite
    verified families on."""
    import transformers

    from routelens.capture.listing import family_rows, markdown, verified_versions
    from routelens.capture.readme import block_of

    rows = family_rows()
    block = block_of(README)
    generated_for = re.search(r"MoE families of transformers (\S+) are recorded", block).group(1)
    if generated_for == transformers.__version__:
        assert block == markdown(rows)
        return
    assert any(generated_for in versions for versions in verified_versions().values()), generated_for
    listed = dict(re.findall(r"^\| ([\w-]+) \| `([^`]+)` \|", block, re.M))
    here = {r.model_type: r.router for r in rows}
    for model_type in set(listed) & set(here):
        assert listed[model_type] == here[model_type], model_type
