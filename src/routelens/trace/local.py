"""The local backend: plan and compute in this process, shards written by a background thread.

The model computes shard i+1 while a writer thread compresses and writes shard i (Parquet
encoding releases the GIL). A shard already on disk is skipped after checking that it ends at
the document the plan says, whichever run or backend wrote it.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from routelens.corpus import CorpusSpec
from routelens.progress import progress_bar
from routelens.store.writer import TraceWriter, shard_name
from routelens.trace.compute import ShardComputer
from routelens.trace.config import TraceConfig
from routelens.trace.plan import Planner, check_resumable
from routelens.trace.totals import Totals


def trace_locally(model, tokenizer, routing, config: TraceConfig, specs: list[CorpusSpec], writer: TraceWriter) -> dict:
    """Trace every shard of the plan into `writer`'s directory; returns {"totals", "corpora"}."""
    planner = Planner(tokenizer, config, specs)
    shards = planner.shards()
    if config.generate:  # prompts decoded with the cache (generate.py)
        from routelens.trace.generate import GenerationComputer, prompt_shards

        shards, computer = (
            prompt_shards(shards, config.generate),
            GenerationComputer(model, tokenizer, routing, config, specs),
        )
    else:
        computer = ShardComputer(model, tokenizer, routing, config, specs)
    done = writer.existing_shards()
    totals = Totals(specs)
    budget = config.max_tokens * len(specs) if config.max_tokens else None
    pending: list[Future] = []
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="routelens-writer") as pool,
        progress_bar(not config.progress) as bar,
    ):
        task = bar.add_task("tracing", total=budget, status="")
        for shard in shards:
            path = writer.shard_dir / shard_name(shard.index)
            if check_resumable(shard, done, path):
                totals.add(*shard.counts(len(specs)), path.stat().st_size)
            else:
                table = computer.compute(shard)
                meta = {"next_doc": shard.next_doc, "rows": shard.rows}
                pending.append(pool.submit(writer.write_shard, shard.index, table, meta))
                totals.add(*shard.counts(len(specs)))
            while pending and pending[0].done():
                totals.bytes += pending.pop(0).result()
            bar.update(task, advance=shard.rows, status=totals.status())
        for fut in pending:
            totals.bytes += fut.result()
    return totals.manifest_part(computer.L)
