"""TraceConfig validation: --max-memory parsed strictly, device-map settings checked together,
and the placement settings kept out of the trace's identity."""

from __future__ import annotations

import pytest

from routelens.errors import RoutelensError
from routelens.trace import DeviceMap, TraceConfig, parse_max_memory


def test_max_memory_parses_devices_and_units():
    got = parse_max_memory("0=70GiB, 1=1.5GB,cpu=200MiB,mps=10KB")
    assert got == {0: 70 * 2**30, 1: 1_500_000_000, "cpu": 200 * 2**20, "mps": 10_000}
    assert parse_max_memory({0: "2GiB", "cpu": 123}) == {0: 2 * 2**30, "cpu": 123}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("0=70", "unit"),
        ("0=70XB", "unit"),
        ("gpu0=70GiB", "'gpu0' is unknown"),
        ("0:70GiB", "not DEVICE=SIZE"),
        ("0=70GiB,0=1GiB", "twice"),
        ("0=0GiB", "positive"),
        ("0=70GiB,", "not DEVICE=SIZE"),
        ("-1=1GiB", "unknown"),
    ],
)
def test_bad_max_memory_is_one_line_naming_the_bad_part(text, fragment):
    with pytest.raises(RoutelensError, match=fragment) as err:
        parse_max_memory(text)
    assert "\n" not in str(err.value) and "--max-memory" in str(err.value)


def test_device_map_settings_are_checked_together():
    config = TraceConfig(device_map="sequential", max_memory="cpu=1GiB", offload_folder="off")
    assert config.device_map is DeviceMap.SEQUENTIAL and config.max_memory == {"cpu": 2**30}
    with pytest.raises(RoutelensError, match="--device-map 'everywhere' is unknown"):
        TraceConfig(device_map="everywhere")
    with pytest.raises(RoutelensError, match="--max-memory applies to a device map"):
        TraceConfig(max_memory="cpu=1GiB")
    with pytest.raises(RoutelensError, match="--offload-folder applies to a device map"):
        TraceConfig(offload_folder="off")
    with pytest.raises(RoutelensError, match="drop --device"):
        TraceConfig(device="cuda:1", device_map="auto", ray="local")


def test_placement_is_not_part_of_the_identity():
    plain = TraceConfig(seq_len=64)
    placed = TraceConfig(
        seq_len=64,
        device_map="auto",
        max_memory="cpu=1GiB",
        offload_folder="off",
        trust_remote_code=True,
        ray="local",
        ray_workers=3,
    )
    assert plain.identity() == placed.identity()
    assert plain.identity() != TraceConfig(seq_len=32).identity()
    assert "seq_len" in plain.identity() and "device_map" not in plain.identity()
