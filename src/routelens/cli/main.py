"""Entry point of the `routelens` command. Each command lives in its own module and registers
itself here, so that `routelens --help` lists them all.

    routelens demo                                   # everything, on a model it trains itself
    routelens trace MODEL --corpus web=c4.txt --out trace/
    routelens info trace/
"""

from __future__ import annotations

import importlib
import inspect

from routelens.cli.common import new_app

app = new_app("Record, analyze and exploit the routing of Mixture-of-Experts language models.")

# Modules under routelens.cli that define `register(app)`; order is the order in --help.
COMMANDS = [
    "demo_cmd",
    "trace_cmd",
    "analyze_cmd",
    "simulate_cmd",
    "report_cmd",
    "import_cmd",
    "export_cmd",
    "compare_cmd",
    "replay_cmd",
    "corpus_cmd",
    "inspect_cmd",
    "families_cmd",
    "upcycle_cmd",
    "train_cmd",
    "eval_cmd",
    "prune_cmd",
]

for _name in COMMANDS:
    importlib.import_module(f"routelens.cli.{_name}").register(app)


def _one_line_summaries() -> None:
    """`routelens --help` lists each command by its docstring's first paragraph, unwrapped:
    the source wraps at 120 columns, the terminal at its own width."""
    for info in app.registered_commands:
        doc = inspect.getdoc(info.callback) or ""
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())


_one_line_summaries()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
