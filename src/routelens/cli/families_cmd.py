"""`routelens families`: every MoE family of the installed transformers and whether routelens records it.

    routelens families
    routelens families --json families.json
    routelens families --json -
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import BareJsonCommand, console, print_json, to_stdout


def families(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write a JSON list to this file instead of a table; - or a bare --json: stdout.")
    ] = None,
) -> None:
    """List every MoE family of the installed transformers: router class, routing rule, status.

    Families are found in transformers itself (model classes that record `router_logits`), so a
    newer transformers lists its new families here. Status `exact`: routelens records the
    experts' own inputs, checked on a tiny model of the family by the conformance suite;
    otherwise the reason the family is not recorded.
    """
    from routelens.capture.listing import EXACT, family_rows

    rows = family_rows()
    payload = [r.to_json() for r in rows]
    if to_stdout(json_path):
        print_json(payload, indent=2)
        return
    if json_path is not None:
        from routelens.atomic import write_json

        write_json(json_path, payload, indent=2, newline=True)
        console.print(f"[green]wrote[/] {json_path}")
        return
    table = Table()
    for column in ("family", "router", "routing rule", "status"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.model_type, r.router, r.rule, r.status if r.status == EXACT else f"[yellow]{r.status}[/]")
    console.print(table)
    exact = sum(r.status == EXACT for r in rows)
    console.print(f"{exact} of {len(rows)} MoE families recorded exactly", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("families", cls=BareJsonCommand)(families)
