"""An equal-slot expert placement chosen on a trace, in the files serving engines load.

    routelens export placement trace/ --devices 8 --redundant 8 --format sglang --out placement.json

Every device gets (E + R) / N slots (refused when that does not divide). Per MoE layer: the R
redundant slots go, one at a time, to the expert whose load per replica is highest (an expert
has at most one replica per device); the replicas are then placed longest-first on the
least-loaded device with a free slot that does not hold that expert yet (LPT), and a local pass
swaps replicas between the most loaded device and any other while that lowers the higher of the
two. A replica carries its expert's load / replicas (the engines split an expert's tokens over its
replicas). The balance reached, max / mean device load, is reported per layer.

- vllm-ascend: `expert_map_path` JSON, `{moe_layer_count, layer_list: [{layer_id, device_count,
  device_list: [{device_id, device_expert: [...]}]}]}`, layer ids counting MoE layers only
  (vllm_ascend/eplb/core/eplb_utils.py reads `layer_list[i]` by position for the i-th MoE layer).
- sglang: `--init-expert-location` JSON, `{"physical_to_logical_map": [[...]]}`, one row per
  decoder layer (dense layers get the first MoE layer's row: SGLang sizes the map by the model's
  layers), physical slot p on device p // slots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from routelens.config import build_config, choice, setting
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace


class PlacementFormat(StrEnum):
    VLLM_ASCEND = "vllm-ascend"
    SGLANG = "sglang"


@dataclass
class PlacementConfig:
    devices: int = setting(8, "Devices (expert-parallel ranks) the experts are placed on.")
    redundant: int = setting(0, "Redundant expert slots in all (replicas of the hottest experts).")
    format: PlacementFormat = setting(
        PlacementFormat.SGLANG, "sglang: --init-expert-location JSON; vllm-ascend: expert_map_path JSON."
    )
    domain: str | None = setting(None, "Place on this domain's tokens only (default: all).", shown_default="all")
    progress: bool = setting(True, "Show a progress bar.")

    def __post_init__(self):
        self.format = choice(PlacementFormat, self.format, "--format")
        if self.devices < 1:
            raise RoutelensError(f"--devices must be at least 1 (got {self.devices}).")
        if self.redundant < 0:
            raise RoutelensError(f"--redundant must be 0 or more (got {self.redundant}).")


@dataclass
class DevicePlacement:
    """device_experts[layer][device] = the logical experts in that device's slots (MoE layers)."""

    device_experts: list[list[list[int]]]
    balance: list[float]  # per MoE layer: max / mean device load on the trace
    moe_layers: list[int]
    num_hidden_layers: int
    path: Path | None = None


def place_layer(load: np.ndarray, devices: int, redundant: int) -> tuple[list[list[int]], float]:
    """One layer's loads (E,) -> (experts per device, max / mean device load)."""
    E = len(load)
    slots = (E + redundant) // devices
    load = load.astype(np.float64)
    replicas = np.ones(E, np.int64)
    for _ in range(redundant):
        share = np.where(replicas < devices, load / replicas, -1.0)
        replicas[int(np.argmax(share))] += 1
    items = sorted(
        ((load[e] / replicas[e], e) for e in range(E) for _ in range(replicas[e])), key=lambda t: (-t[0], t[1])
    )
    held: list[list[int]] = [[] for _ in range(devices)]
    weight = np.zeros(devices)
    for w, e in items:
        free = [d for d in range(devices) if len(held[d]) < slots and e not in held[d]]
        d = min(free, key=lambda d: (weight[d], d))
        held[d].append(e)
        weight[d] += w
    share = {e: load[e] / replicas[e] for e in range(E)}
    for _ in range(4 * E):  # local improvement: swap a replica off the most loaded device
        hot = int(np.argmax(weight))
        best = None
        for d in range(devices):
            if d == hot:
                continue
            for i, a in enumerate(held[hot]):
                for j, b in enumerate(held[d]):
                    if a == b or b in held[hot] or a in held[d]:
                        continue
                    delta = share[a] - share[b]
                    top = max(weight[hot] - delta, weight[d] + delta)
                    if top < max(weight[hot], weight[d]) - 1e-12 and (best is None or top < best[0]):
                        best = (top, d, i, j, delta)
        if best is None:
            break
        _, d, i, j, delta = best
        held[hot][i], held[d][j] = held[d][j], held[hot][i]
        weight[hot] -= delta
        weight[d] += delta
    mean = weight.mean()
    return [sorted(h) for h in held], float(weight.max() / mean) if mean > 0 else 1.0


def plan_placement(trace: Trace | str | os.PathLike, config: PlacementConfig) -> DevicePlacement:
    from routelens.engines.export import expert_load

    tr = trace if isinstance(trace, Trace) else open_trace(trace)
    E = tr.num_experts
    if (E + config.redundant) % config.devices:
        raise RoutelensError(
            f"--devices {config.devices} does not divide the {E} experts + {config.redundant} redundant slots "
            f"({E + config.redundant}); choose --redundant so that (E + R) / N is whole, e.g. "
            f"--redundant {-E % config.devices}."
        )
    if config.redundant > E * (config.devices - 1):
        raise RoutelensError(
            f"--redundant {config.redundant} needs more replicas than {config.devices} devices can hold "
            f"(at most one of an expert per device); use at most {E * (config.devices - 1)}."
        )
    counts = expert_load(tr, domain=config.domain, progress=config.progress)[:, :E]  # routed experts only
    layers, balance = [], []
    for row in counts:
        held, b = place_layer(row, config.devices, config.redundant)
        layers.append(held)
        balance.append(b)
    hidden = int((tr.manifest.get("model") or {}).get("num_hidden_layers") or (max(tr.layers) + 1))
    return DevicePlacement(layers, balance, list(tr.layers), max(hidden, max(tr.layers) + 1))


def placement_json(placement: DevicePlacement, fmt: PlacementFormat) -> dict:
    if fmt is PlacementFormat.VLLM_ASCEND:
        return {
            "moe_layer_count": len(placement.device_experts),
            "layer_list": [
                {
                    "layer_id": i,
                    "device_count": len(devices),
                    "device_list": [{"device_id": d, "device_expert": held} for d, held in enumerate(devices)],
                }
                for i, devices in enumerate(placement.device_experts)
            ],
        }
    rows = {layer: sum(devs, []) for layer, devs in zip(placement.moe_layers, placement.device_experts)}
    first = rows[placement.moe_layers[0]]
    return {"physical_to_logical_map": [rows.get(layer, first) for layer in range(placement.num_hidden_layers)]}


def export_placement(
    trace: Trace | str | os.PathLike, out: str | os.PathLike, config: PlacementConfig | None = None, **overrides
) -> DevicePlacement:
    """Choose an equal-slot placement on the trace's loads and write it to `out` in `config.format`."""
    from routelens.atomic import check_json_target, write_json

    config = build_config(PlacementConfig, config, overrides)
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise RoutelensError(
            f"--out {out}: a placement is written as .json; name it e.g. {out.with_suffix('.json').name}."
        )
    check_json_target(out, what="--out", example="placement.json")
    placement = plan_placement(trace, config)
    placement.path = write_json(out, placement_json(placement, config.format), indent=None, newline=True, what="--out")
    return placement
