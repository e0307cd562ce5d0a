"""routelens: record, analyze and exploit the routing of Mixture-of-Experts language models.

import routelens
routelens.trace("path/to/moe-model", {"web": "c4.txt"}, out="trace/")
tr = routelens.open_trace("trace/")
"""

from routelens import trace
from routelens.errors import RoutelensError, UnsupportedModelError
from routelens.store import Trace, TraceChunk, open_trace
from routelens.version import VERSION as __version__

__all__ = ["RoutelensError", "Trace", "TraceChunk", "UnsupportedModelError", "__version__", "open_trace", "trace"]
