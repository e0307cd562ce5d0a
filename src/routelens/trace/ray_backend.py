"""The Ray backend: the local backend's plan and compute, spread over a pool of model actors.

    documents --read, tokenize, plan (one Ray task, on the driver's node)--> one row per shard
      --map_batches(pool of model actors: one per GPU, G GPUs each, or CPU actors)--> part-{i:05d}.parquet
      --> a small row per shard back to the driver --> manifest.json, written once at the end

The plan is `Planner.shards`, the very generator the local backend uses, run in one sequential
task: doc ids are the same global numbering, shards hold the same windows, and an actor computes
a shard with `ShardComputer.compute`, the same batches in the same order. So a Ray trace holds
exactly the rows of a local trace, in the same shard files (`part-i` is the plan's shard i,
whichever actor wrote it). An actor given more than one GPU spreads its model over them with a
device map (as `--device-map` does in one process). Actors write shards with the store's atomic
writer; Ray Data restarts dead actors and retries their shard, and a killed driver's run resumes
on re-run by skipping every shard present on disk. This module depends on the trace core; the
core never imports it.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from routelens.corpus import CorpusSpec
from routelens.errors import RoutelensError
from routelens.models.loading import load_model, load_tokenizer
from routelens.store.writer import TraceWriter, shard_name, write_shard
from routelens.trace.compute import ShardComputer
from routelens.trace.config import DeviceMap, TraceConfig
from routelens.trace.plan import Planner, Shard, check_resumable
from routelens.trace.totals import Totals

INSTALL_HINT = "pip install 'routelens[ray]'"


def require_ray():
    """The `ray` module, or one clear line saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RoutelensError(f"--ray needs Ray Data, which is not installed; run: {INSTALL_HINT}") from None
    return ray


def actor_config(config: TraceConfig, gpus: float) -> TraceConfig:
    """The settings an actor traces with: its own device(s), no Ray, no progress bar.

    An actor with more than one GPU holds one copy of the model spread over its GPUs (Ray makes
    them devices 0..G-1 inside the actor), with the user's --device-map or else `auto`; with one
    GPU or none it computes on that device, unless a --device-map was asked for (e.g. to offload
    to CPU memory what one GPU cannot hold).
    """
    if gpus > 1 or config.device_map is not None:
        return replace(config, device="cpu", device_map=config.device_map or DeviceMap.AUTO, ray=None, progress=False)
    return replace(config, device="cuda" if gpus > 0 else "cpu", ray=None, progress=False)


# -- the two stages -----------------------------------------------------------------------------
def _plan_shards(
    _seed, *, model: str, config: TraceConfig, specs: list[CorpusSpec], shard_dir: str, done: dict
) -> Iterator[dict]:
    """Ray Data UDF: read and tokenize the corpora, yield one row per shard of the plan.

    Shards already on disk (`done`: {index: metadata}) travel as an empty payload, only for
    their counts; one ending at another document than the plan says means another plan wrote it.
    """
    planner = Planner(load_tokenizer(model, config), config, specs)
    for shard in planner.shards():
        on_disk = check_resumable(shard, done, Path(shard_dir) / shard_name(shard.index))
        docs, tokens = shard.counts(len(specs))
        yield {
            "index": np.array([shard.index], np.int64),
            "rows": np.array([shard.rows], np.int64),
            "next_doc": np.array([shard.next_doc], np.int64),
            "docs": docs[None],  # (1, domains)
            "tokens": tokens[None],  # (1, domains)
            "payload": np.array([b"" if on_disk else pickle.dumps(shard, protocol=5)], dtype=object),
        }


class ShardTracer:
    """Ray Data actor: holds the model, turns planned shards into Parquet shards on disk."""

    def __init__(self, model: str, routing, config: TraceConfig, specs: list[CorpusSpec], shard_dir: str, gpus: float):
        local = actor_config(config, gpus)
        if local.offload_folder is not None:  # actors on one node must not write each other's offloaded weights
            own = Path(local.offload_folder) / f"actor-{socket.gethostname()}-{os.getpid()}"
            local = replace(local, offload_folder=str(own))
        hf_model, tokenizer = load_model(model, local)
        self.computer = ShardComputer(hf_model, tokenizer, routing, local, specs)
        self.shard_dir = Path(shard_dir)
        self.unchecked = config.verify  # each actor checks its first batch before it writes a shard

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes = np.zeros(len(batch["index"]), np.int64)
        for i, (index, payload) in enumerate(zip(batch["index"], batch["payload"])):
            if len(payload) == 0:  # written by an earlier run
                sizes[i] = (self.shard_dir / shard_name(int(index))).stat().st_size
                continue
            shard: Shard = pickle.loads(payload)
            if self.unchecked:
                self.computer.verify_first(shard)
                self.unchecked = False
            table = self.computer.compute(shard)
            sizes[i] = write_shard(self.shard_dir, shard.index, table, {"next_doc": shard.next_doc, "rows": shard.rows})
        return {k: batch[k] for k in ("index", "rows", "next_doc", "docs", "tokens")} | {"bytes": sizes}


# -- the driver ---------------------------------------------------------------------------------
def _connect(ray, config: TraceConfig) -> bool:
    """Join or start Ray; True when this call started it (and so must shut it down)."""
    if ray.is_initialized():  # e.g. a notebook or test that already called ray.init
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if config.ray == "local":  # GPUs are detected; CPUs: enough for the actors asked for + the planner
            cpus = max(os.cpu_count() or 1, (config.ray_workers or 1) + 1)
            ray.init(num_cpus=cpus, **quiet)
        else:
            ray.init(address=config.ray, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RoutelensError(
            f"could not reach Ray at --ray-address {config.ray!r}: {first}; start it with `ray start`."
        ) from None
    return True


def _pool(ray, config: TraceConfig) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU when the cluster has GPUs, else one per spare CPU."""
    resources = ray.cluster_resources()
    gpus = config.ray_gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if gpus > resources.get("GPU", 0):
        raise RoutelensError(
            f"--ray-gpus-per-worker {gpus:g} asks for more GPUs than the cluster has ({resources.get('GPU', 0):g}); "
            "lower it, or add GPU nodes."
        )
    if gpus > 1 and gpus != int(gpus):
        raise RoutelensError(
            f"--ray-gpus-per-worker {gpus:g}: above 1 it must be a whole number of GPUs (the model is spread over them)."
        )
    if config.ray_workers is not None:
        return config.ray_workers, gpus
    if gpus > 0:
        return max(1, int(resources["GPU"] // gpus)), gpus
    return max(1, int(resources.get("CPU", 2)) - 1), gpus  # one CPU stays with the planner


def _user_error(exc: BaseException) -> RoutelensError | None:
    """The RoutelensError a Ray task raised, under Ray's wrapping of it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RoutelensError):
            return RoutelensError(str(exc).strip().splitlines()[-1].removeprefix("routelens.errors.RoutelensError: "))
        exc = exc.__cause__ or exc.__context__
    return None


def _quietly(batches: Iterator) -> Iterator:
    """Iterate Ray Data output without its start/finish log lines and planning warnings."""
    import logging
    import warnings

    log = logging.getLogger("ray.data")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # The actor pool sees one input (the planner's seed row) when Ray Data plans the run.
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            yield from batches
    finally:
        log.setLevel(level)


def trace_on_ray(model: str, routing, config: TraceConfig, specs: list[CorpusSpec], writer: TraceWriter) -> dict:
    """Run the plan on Ray into `writer`'s directory; returns {"totals", "corpora"} for the manifest."""
    ray = require_ray()
    from routelens.progress import progress_bar

    started = _connect(ray, config)
    totals = Totals(specs)
    try:
        workers, gpus = _pool(ray, config)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours below counts tokens; Ray's would interleave with it
        context.print_on_execution_start = False
        # The planner reads the corpora where the command runs: pin it to the driver's node. It
        # must stay its own stage: fused into the actors' stage, one task would feed one actor
        # (and every actor would inherit the pinning); its distinct remote args (max_calls=1: a
        # worker that ran the plan is not reused) keep Ray Data from fusing the two.
        here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
        planned = (
            ray.data.from_items([{"seed": 0}])
            .map_batches(
                _plan_shards,
                batch_size=1,
                num_cpus=1,
                label_selector=here,
                max_calls=1,
                fn_kwargs={
                    "model": model,
                    "config": config,
                    "specs": specs,
                    "shard_dir": str(writer.shard_dir),
                    "done": writer.existing_shards(),
                },
            )
            .repartition(target_num_rows_per_block=1)
        )  # one shard per block: blocks are what actors share out
        traced = planned.map_batches(
            ShardTracer,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus or None,
            num_cpus=1,
            fn_constructor_kwargs={
                "model": model,
                "routing": routing,
                "config": config,
                "specs": specs,
                "shard_dir": str(writer.shard_dir),
                "gpus": gpus,
            },
        )
        budget = config.max_tokens * len(specs) if config.max_tokens else None
        with progress_bar(not config.progress) as bar:
            task = bar.add_task(f"tracing on Ray ({workers} actors)", total=budget, status="")
            try:
                for batch in _quietly(traced.iter_batches(batch_size=None, batch_format="numpy")):
                    for i in range(len(batch["index"])):
                        totals.add(batch["docs"][i], batch["tokens"][i], int(batch["bytes"][i]))
                        bar.update(task, advance=int(batch["rows"][i]), status=totals.status())
            except Exception as exc:
                user = _user_error(exc)
                if user is None:
                    raise
                raise user from None
    finally:
        if started:
            ray.shutdown()
    # Every actor has finished: temporary files left now are those of actors that died mid-write
    # (their shard was retried and written whole by another attempt).
    for stale in writer.shard_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    return totals.manifest_part(len(routing.moe_layers))
