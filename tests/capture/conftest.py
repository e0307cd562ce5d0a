"""Tiny MoE models built once per test session (never downloaded), shared by the capture tests."""

from __future__ import annotations

import pytest

from tests.capture.tiny_moe import build


@pytest.fixture(scope="session")
def moe_model():
    """`moe_model(family)`: the tiny eval-mode model of that family, built on first use."""
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build(family)
        return cache[family]

    return get
