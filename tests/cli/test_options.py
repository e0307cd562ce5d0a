"""CLI options read their default and help from the config dataclasses (`routelens.cli.options`),
so `--help`, the command and the library agree; a tuple field's CLI default None means the
config's own default."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from routelens.analysis import AnalyzeConfig
from routelens.cli.main import app
from routelens.cli.options import cli_config, config_option
from routelens.config import setting
from routelens.errors import RoutelensError
from routelens.simulate import BalanceConfig, CacheConfig


@dataclasses.dataclass
class Toy:
    size: int = setting(3, "How many.")
    names: tuple[str, ...] = setting(("a", "b"), "Names, repeatable.")
    limit: int | None = setting(None, "At most this many.", shown_default="all")
    bare: int = 1  # no help: not an option


def test_option_takes_the_field_default_and_help():
    size = config_option(Toy, "size", "--size")
    assert size.default == 3 and size.help == "How many." and size.param_decls == ("--size",)
    names = config_option(Toy, "names", "--name", "-n")
    assert names.default is None and names.help == "Names, repeatable. \\[default: a b]"
    assert config_option(Toy, "limit", "--limit").help.endswith("\\[default: all]")
    with pytest.raises(KeyError, match="no help text"):
        config_option(Toy, "bare", "--bare")


def test_cli_config_leaves_a_none_to_the_config_default():
    assert cli_config(Toy, size=5, names=None) == Toy(size=5)
    assert cli_config(Toy, names=["x"], limit=None).names == ("x",)
    assert cli_config(Toy, size=None).size is None  # a scalar None is a value the command chose, passed on
    with pytest.raises(
        RoutelensError, match="unknown option 'colour' for Toy; valid options are size, names, limit, bare"
    ):
        cli_config(Toy, colour=1)


def option_line(help_text: str, flag: str) -> str:
    return next(line for line in help_text.splitlines() if line.strip("│ ").startswith(f"{flag} "))


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["analyze"], "--min-count", AnalyzeConfig().min_count),
        (["analyze"], "--bootstrap", AnalyzeConfig().bootstrap),
        (["simulate", "balance"], "--devices", BalanceConfig().devices),
        (["simulate", "cache"], "--dtype-bytes", CacheConfig().dtype_bytes),
    ],
)
def test_help_shows_the_config_default(argv, flag, value):
    text = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "200"}).output
    line = option_line(text, flag)
    assert f"[default: {value}]" in line


def test_help_spells_out_a_tuple_default():
    text = CliRunner().invoke(app, ["simulate", "balance", "--help"], env={"COLUMNS": "200"}).output
    line = option_line(text, "--cf")
    assert "[default: " + " ".join(map(str, BalanceConfig().cfs)) + "]" in line
