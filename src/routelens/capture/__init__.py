"""Capture routing from Hugging Face MoE models: which experts each token went to, with what weight.

`describe_model(model)` says what will be recorded (family, rule, true MoE layer indices, E, k
per layer, zero-computation experts, hash-routed layers, size of one expert);
`RoutingRecorder(model)` hooks the experts modules inside a `with` block and `take()` returns the
routing of the forward passes since the last call. `SUPPORTED` (computed on first use: it scans
the installed transformers) names every family routelens records.
"""

from routelens.capture.recorder import Routing, RoutingRecorder
from routelens.models.families import RoutingSpec, Scoring, describe_model, supported_families

__all__ = ["SUPPORTED", "Routing", "RoutingRecorder", "RoutingSpec", "Scoring", "describe_model", "supported_families"]


def __getattr__(name: str):
    if name == "SUPPORTED":
        return supported_families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
