"""Which layers the compact tables and panels show: first to last, spread evenly, in order."""

from __future__ import annotations

from routelens.report.sections.context import is_scalar, spread_layers


def test_spread_layers():
    layers = [str(i) for i in range(32)]
    picked = spread_layers(layers, 3)
    assert picked[0] == "0" and picked[-1] == "31" and len(picked) == 3
    assert spread_layers(["0", "3"], 3) == ["0", "3"]
    assert spread_layers(layers, 8) == sorted(set(spread_layers(layers, 8)), key=int)


def test_is_scalar_refuses_booleans_and_containers():
    assert is_scalar(1) and is_scalar(0.5)
    assert not is_scalar(True) and not is_scalar(None) and not is_scalar({"mean": 1.0}) and not is_scalar("1")
