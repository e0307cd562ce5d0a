"""`routelens families`: every MoE family of the installed transformers and whether routelens records it.

routelens families
routelens families --json families.json
routelens families --verify                      # every family, on the installed transformers
routelens families --verify mixtral longcat_flash --json -
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routelens.cli.common import BareJsonCommand, console, print_json, to_stdout
from routelens.errors import RoutelensError


def families(
    model_types: Annotated[
        list[str] | None, typer.Argument(help="With --verify: only these model types (default: every family).")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Build each family's tiny model here and check what routelens records "
            "against the router's own choice and the MoE block's own output.",
        ),
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write a JSON list to this file instead of a table; - or a bare --json: stdout."),
    ] = None,
) -> None:
    """List every MoE family of the installed transformers: router class, routing rule, status.

        Families are found in transformers itself (model classes that record `router_logits`), so a
        newer transformers lists its new families here. Status `exact`: routelens records the routing
        each MoE block computes with; otherwise the reason the family is not recorded. `replay`:
    whether `routelens.replay` forces the family's routing exactly, or why it refuses. `verified_on`
        is the newest transformers on which the test suite verified the family. `--verify` checks it
        now, on the installed transformers (exit 1 when a family fails).
    """
    from routelens.capture.listing import EXACT, family_rows

    rows = family_rows()
    if model_types and not verify:
        raise RoutelensError("model types select the families to verify; add --verify (or drop the model types).")
    verdicts = _verify(rows, model_types or [], quiet_stdout=to_stdout(json_path)) if verify else None
    payload = [r.to_json() for r in rows]
    if verdicts is not None:
        import transformers

        payload = [
            p
            | {
                "verify": verdicts[p["model_type"]].verify,
                "padding": verdicts[p["model_type"]].padding,
                "transformers": transformers.__version__,
            }
            for p in payload
            if p["model_type"] in verdicts
        ]
    if to_stdout(json_path):
        print_json(payload, indent=2)
    elif json_path is not None:
        from routelens.atomic import write_json

        write_json(json_path, payload, indent=2, newline=True, what="--json")
        console.print(f"[green]wrote[/] {json_path}")
    elif verdicts is None:
        table = Table()
        for column in ("family", "router", "routing rule", "status", "replay", "verified on"):
            table.add_column(column, overflow="fold")
        for r in rows:
            status = r.status if r.status == EXACT else f"[yellow]{r.status}[/]"
            if r.unpadded:
                status += f" (traced without padding: {r.unpadded})"
            replay = r.replay if r.replay in (EXACT, "-") else f"[yellow]{r.replay}[/]"
            table.add_row(r.model_type, r.router, r.rule, status, replay, r.verified_on or "-")
        console.print(table)
        exact = sum(r.status == EXACT for r in rows)
        console.print(f"{exact} of {len(rows)} MoE families recorded exactly", highlight=False)
    if verdicts is not None:
        import transformers

        from routelens.progress import console as progress_console

        verified = sum(v.verify == "verified" for v in verdicts.values())
        (progress_console if to_stdout(json_path) else console).print(
            f"{verified} of {len(verdicts)} MoE families verified on transformers {transformers.__version__}",
            highlight=False,
        )
        if any(not v.ok for v in verdicts.values()):
            raise typer.Exit(1)


def _verify(rows, wanted: list[str], *, quiet_stdout: bool) -> dict:
    """Each family's verdict, printed as it comes (on stderr where stdout carries the JSON), under a
    progress bar."""
    from routelens.capture.listing import families_to_verify
    from routelens.capture.verify import verify_families
    from routelens.progress import progress_bar

    chosen = families_to_verify(wanted, rows)  # an unknown model type is refused by the library
    with progress_bar(transient=True) as bar:
        task = bar.add_task("verifying", total=len(chosen), status="")

        def show(verdict) -> None:
            colour = "green" if verdict.verify == "verified" else ("red" if not verdict.ok else "yellow")
            note = f" ({verdict.padding})" if verdict.padding and verdict.padding != "exact" else ""
            (bar.console if quiet_stdout else console).print(
                f"{verdict.model_type}: [{colour}]{verdict.verify}[/]{note}", highlight=False
            )
            bar.update(task, advance=1)

        return verify_families(
            chosen, rows=rows, on_start=lambda model_type: bar.update(task, status=model_type), on_verdict=show
        )


def register(app: typer.Typer) -> None:
    app.command("families", cls=BareJsonCommand)(families)
