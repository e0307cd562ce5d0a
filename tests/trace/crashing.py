"""A model actor that dies once, half-way through writing one shard (for the retry test).

Shipped to the Ray workers by value (cloudpickle), so the workers need not import the tests."""

from __future__ import annotations

import os
from pathlib import Path

from routelens.trace.ray_backend import ShardTracer

CRASH_SHARD = 2


class CrashOnceShardTracer(ShardTracer):
    marker: str = ""  # set by the test: a file that exists once the crash has happened

    def __call__(self, batch):
        if int(batch["index"][0]) == CRASH_SHARD and len(batch["payload"][0]) and not Path(self.marker).exists():
            Path(self.marker).write_text("crashed")
            (self.shard_dir / f".part-{CRASH_SHARD:05d}.parquet.dying.tmp").write_bytes(b"PAR1 half a shard")
            os._exit(1)  # the worker process dies: no exception, no cleanup
        return super().__call__(batch)
