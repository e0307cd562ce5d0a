"""Capture routing from Hugging Face MoE models: which experts each token went to, with what weight.

`describe_model(model)` says what will be recorded (family, rule, true MoE layer indices, E, k,
size of one expert); `RoutingRecorder(model)` hooks the routers inside a `with` block and
`take()` returns the routing of the forward passes since the last call.
"""

from routelens.capture.families import SUPPORTED, RoutingSpec, Scoring, describe_model
from routelens.capture.recorder import Routing, RoutingRecorder

__all__ = ["SUPPORTED", "Routing", "RoutingRecorder", "RoutingSpec", "Scoring", "describe_model"]
