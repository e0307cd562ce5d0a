"""The table of MoE families behind `routelens families` and the README's "Supported families".

One row per MoE family of the installed transformers: its router class, its routing rule in
one line and its status, `exact` (recorded from the experts' inputs and checked on a tiny model
by the conformance suite) or the reason it is not recorded, and whether `routelens.replay` forces
its routing exactly (or why it refuses). The README's list is generated from
these rows (`python -m routelens.capture.readme`), so it cannot drift from the code.
"""

from __future__ import annotations

import importlib
import json
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

from routelens.errors import RoutelensError
from routelens.models.catalog import Family, moe_families, text_config_class
from routelens.models.families import ADAPTERS
from routelens.models.overrides import unpadded_reason
from routelens.models.replay import why_refused
from routelens.models.rules import class_source, derived_rule
from routelens.models.unsupported import UNSUPPORTED

EXACT = "exact"


# family -> the transformers versions on which the test suite verified it (newest last); written by
# `python -m routelens.capture.readme` on each version the suite passed on
VERIFIED_ON = Path(__file__).with_name("verified_on.json")


@dataclass(frozen=True)
class FamilyRow:
    model_type: str
    router: str  # router class name(s), comma-separated where a model has several
    rule: str
    status: str  # "exact" or "unsupported: <reason>"
    verified_on: str | None = None  # the newest transformers version the suite verified it on
    unpadded: str | None = None  # why it is traced without padding (None: padded batches route as documents alone)
    replay: str = (
        "-"  # `routelens.replay`: "exact" (checked per family by the suite), "refused: <reason>", "-" unrecorded
    )

    def to_json(self) -> dict:
        return asdict(self)


def verified_versions() -> dict[str, list[str]]:
    """{family: [transformers versions the suite verified it on, oldest first]}."""
    try:
        return json.loads(VERIFIED_ON.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def record_verified(families: list[str], version: str) -> dict[str, list[str]]:
    """Add `version` to the families verified on it and write the file back."""
    from packaging.version import Version

    from routelens.atomic import write_text

    table = verified_versions()
    for model_type in families:
        table[model_type] = sorted(set(table.get(model_type, [])) | {version}, key=Version)
    table = dict(sorted(table.items()))
    write_text(
        VERIFIED_ON, "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items()) + "\n}\n"
    )
    return table


class _Named(dict):
    """Format fields from a config class's defaults; an unknown field stays named, not guessed."""

    def __missing__(self, key):
        return f"<{key}>"


def _config_defaults(model_type: str) -> dict:
    """Default field values of the family's text config class."""
    import dataclasses

    try:
        cls = text_config_class(model_type)
    except KeyError:
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _owner_class(module, router: type) -> type:
    """The class that builds `router` (the MoE block, or the decoder layer where router and experts
    sit side by side); the router itself where it is the block (ERNIE-4.5-VL)."""
    for obj in vars(module).values():
        if isinstance(obj, type) and obj is not router and obj.__module__ == module.__name__:
            src = class_source(obj)
            if f"{router.__name__}(" in src and "experts" in src:
                return obj
    return router


def _rule(family: Family) -> str:
    module = importlib.import_module(family.module)
    router = getattr(module, family.routers[0])
    adapter = ADAPTERS.get(router.__name__)
    defaults = _config_defaults(family.model_type)
    if adapter and adapter.rule:
        template = adapter.rule
    else:
        template = derived_rule(router, _owner_class(module, router), SimpleNamespace(**defaults))
    names = {"norm": "norm_topk_prob", "scale": "routed_scaling_factor", "topk_method": "topk_method"}
    values = _Named({key: defaults[name] for key, name in names.items() if name in defaults})
    return string.Formatter().vformat(template, (), values)


def _replay_status(model_type: str, unsupported: str | None) -> str:
    """The replay column: `exact` where `routelens.replay` forces the family (tests/capture/
    test_replay_conformance.py checks each), else why it refuses; `-` where nothing is recorded."""
    if unsupported is not None:
        return "-"
    refused = why_refused(model_type)
    return EXACT if refused is None else f"refused: {refused}"


def family_rows() -> list[FamilyRow]:
    """Every MoE family of the installed transformers, sorted by model type."""
    rows = []
    verified = verified_versions()
    for family in moe_families():
        reason = UNSUPPORTED.get(family.model_type)
        status = EXACT if reason is None else f"unsupported: {reason}"
        on = (verified.get(family.model_type) or [None])[-1] if reason is None else None
        rows.append(
            FamilyRow(
                family.model_type,
                ", ".join(family.routers),
                _rule(family),
                status,
                on,
                unpadded_reason(family.model_type),
                _replay_status(family.model_type, reason),
            )
        )
    return rows


def families_to_verify(model_types: Sequence[str] = (), rows: list[FamilyRow] | None = None) -> list[str]:
    """The model types `routelens families --verify` checks: `model_types`, each refused in one
    line unless it is a MoE family of the installed transformers, or every family when none is
    given. `rows` (from `family_rows`) saves scanning transformers again."""
    known = [r.model_type for r in (family_rows() if rows is None else rows)]
    unknown = [t for t in model_types if t not in known]
    if unknown:
        raise RoutelensError(
            f"{unknown[0]} is not a MoE family of the installed transformers; run `routelens families` to list them."
        )
    return list(model_types) or known


def markdown(rows: list[FamilyRow]) -> str:
    """The README's family list: a count line and one table row per family."""
    import transformers

    exact = sum(r.status == EXACT for r in rows)
    lines = [
        f"{exact} of the {len(rows)} MoE families of transformers {transformers.__version__} are recorded exactly "
        "(generated by `python -m routelens.capture.readme` from `routelens families`):",
        "",
        "| family | router | routing rule | status | verified on |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.model_type} | `{r.router}` | {r.rule} | {r.status} | {r.verified_on or '-'} |" for r in rows]
    return "\n".join(lines)
