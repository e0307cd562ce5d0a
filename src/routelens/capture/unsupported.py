"""The MoE families of transformers routelens does not record, each with the reason: ONE place.

The conformance suite (tests/capture/test_conformance.py) checks every other MoE family of the
installed transformers on a tiny model, and fails when a family is neither exact nor listed
here, so this table and `routelens families` stay true across transformers upgrades.
"""

from __future__ import annotations

UNSUPPORTED: dict[str, str] = {}


def why_unsupported(model_type: str) -> str | None:
    """The reason routelens does not record `model_type`, or None when it does (or is not MoE)."""
    return UNSUPPORTED.get(model_type)
