"""Generation traces: each document is a prompt; the model prefills it and decodes N tokens with its
KV cache, and the routing of the prefill and of every decode step becomes rows (`--generate N`).

    plan (the teacher-forced planner's shards) --prompt_shards--> one window per document, the
      first --seq-len tokens, rows = prompt + N --GenerationComputer--> per batch of prompts:
      left-padded prefill, then N single-token steps with the cache --> rows with `phase`

Why a loop of our own rather than `model.generate()`: the routing is recorded by the capture's
hooks once per forward call, and a loop that makes exactly one call per step keeps "the routing of
step j" what the experts of step j received, with nothing hidden (no assisted decoding, no logits
processors). Inputs follow what `generate()` gives the model: prompts left-padded with an attention
mask that grows by one column per step, position ids `cumsum(mask) - 1` (padding at 0), the cache
the model builds on its first call.

Every sequence decodes exactly N tokens, also past an end-of-sequence token (like a serving
benchmark's `ignore_eos`): rows per document are known at plan time, which is how a resumed run
checks its shards, and all sequences of a batch step together. The token fed at step j is the
one step j-1 chose, so all N generated tokens are rows with the routing the model computed for
them; the last step's logits are not used. Greedy when `temperature` is 0, else sampling from
softmax(logits / T) over the top-p nucleus with a generator seeded by (seed, first document of
the batch), so a resumed run draws the same tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import torch

from routelens.store.schema import PHASES, expert_id_numpy, phase_array
from routelens.trace.compute import ShardComputer
from routelens.trace.plan import Shard, Window, batch_rows

PREFILL, DECODE = PHASES.index("prefill"), PHASES.index("decode")


@dataclass
class PromptShard(Shard):
    """A shard of prompts: each window is a whole prompt, followed in the rows by `generate` tokens."""

    generate: int = 0
    phase: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))  # filled by compute

    def counts(self, num_domains: int) -> tuple[np.ndarray, np.ndarray]:
        docs, tokens = super().counts(num_domains)
        return docs, tokens + docs * self.generate


def prompt_shards(shards: Iterable[Shard], generate: int) -> Iterator[PromptShard]:
    """The planner's shards as prompt shards: a document's first window is its prompt (the rest of
    a document longer than --seq-len is left out) and its rows make room for `generate` tokens."""
    for shard in shards:
        out = PromptShard(shard.index, next_doc=shard.next_doc, generate=generate)
        for w in shard.windows:
            if w.start == 0:
                out.windows.append(replace(w, row=out.rows))
                out.rows += len(w.ids) + generate
        yield out


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, V) logits -> (B,) next token ids: argmax at temperature 0, else a draw from the
    temperature-scaled softmax restricted to the smallest set of tokens holding `top_p` of it."""
    if temperature == 0:
        return logits.argmax(-1)
    if generator is not None and logits.device != generator.device:  # a device map's LM head may sit elsewhere
        logits = logits.to(generator.device)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep a token while the mass before it is below top_p (the first token is always kept)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Decoder:
    """Prefill + N cached decode steps of one left-padded batch; `on_forward()` runs after each call."""

    def __init__(self, model, pad_id: int, temperature: float = 0.0, top_p: float = 1.0):
        self.model, self.pad_id, self.temperature, self.top_p = model, pad_id, temperature, top_p
        params = inspect.signature(model.forward).parameters
        self.cache_key = "cache" if "cache" in params else "past_key_values"  # the name changed in transformers 5
        self.with_positions = "position_ids" in params
        self.keep_last = "logits_to_keep" in params  # only the last position's logits are needed

    def left_padded(self, prompts: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), T), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, T - len(p) :] = torch.from_numpy(np.asarray(p, np.int64))
            mask[r, T - len(p) :] = 1
        return ids.to(device), mask.to(device)

    @torch.inference_mode()
    def run(self, ids: torch.Tensor, mask: torch.Tensor, steps: int, generator=None, on_forward=None) -> torch.Tensor:
        """Decode `steps` tokens after the left-padded prompts `ids` (B, T); returns them (B, steps).
        The model is called 1 + steps times: the prefill, then each generated token fed once."""
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
        out_tokens = []
        for step in range(steps + 1):
            if self.with_positions:
                kwargs["position_ids"] = positions
            if self.keep_last:
                kwargs["logits_to_keep"] = 1
            out = self.model(**kwargs)
            if on_forward is not None:
                on_forward(step)
            if step == steps:  # the last generated token has been fed; its successor is not wanted
                break
            nxt = sample_next(out.logits[:, -1, :], self.temperature, self.top_p, generator).to(ids.device)
            out_tokens.append(nxt)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            positions = positions[:, -1:] + 1
            cache = getattr(out, "cache", None)
            kwargs = {
                "input_ids": nxt[:, None],
                "attention_mask": mask,
                "use_cache": True,
                self.cache_key: cache if cache is not None else out.past_key_values,
            }
        return torch.stack(out_tokens, dim=1) if out_tokens else ids.new_empty((ids.shape[0], 0))


class GenerationComputer(ShardComputer):
    """`compute(prompt_shard)`: the rows of its prompts (phase prefill) and of the tokens decoded
    after them (phase decode), each with the routing its forward call recorded."""

    def __init__(self, model, tokenizer, routing, config, specs):
        super().__init__(model, tokenizer, routing, config, specs)
        self.decoder = Decoder(model, self.pad_id, config.temperature, config.top_p)
        self.phase_field = pa.field("phase", pa.dictionary(pa.int32(), pa.string()), nullable=False)

    def _generator(self, first_doc: int):
        if self.config.temperature == 0:
            return None
        return torch.Generator(device=self.device).manual_seed(self.config.seed * 1_000_003 + first_doc)

    @torch.inference_mode()
    def compute(self, shard: PromptShard) -> pa.Table:
        from routelens.capture import RoutingRecorder

        n, L, k, E, N = shard.rows, self.L, self.k, self.E, shard.generate
        experts = np.empty((n, L, k), dtype=expert_id_numpy(self.routing.id_span))  # (tokens, layers, k)
        weights = np.empty((n, L, k), dtype=np.dtype(self.config.weights_dtype))
        probs = np.empty((n, L, E), dtype=np.float16) if self.config.store_probs else None
        norms = np.empty((n, L, k), dtype=np.float16) if self.config.store_expert_norms else None  # (tokens, layers, k)
        D = self.config.lookahead
        ahead = np.empty((n, L, D, k), np.int16) if D else None  # (tokens, layers, D, k)
        full: list[Window] = list(shard.windows)  # prompt + generated ids, filled per batch
        with (
            RoutingRecorder(self.model, self.routing, store_probs=self.config.store_probs) as recorder,
            self._norm_recorder() as norm_recorder,
            self._lookahead_recorder() as ahead_recorder,
        ):
            for rows in batch_rows(shard.windows, self.config.batch_size, equal_lengths=self.unpadded):
                batch = [shard.windows[i] for i in rows]
                ids, mask = self.decoder.left_padded([w.ids for w in batch], self.device)
                T = ids.shape[1]
                lengths = [len(w.ids) for w in batch]

                def store(step: int, batch=batch, T=T, lengths=lengths):
                    got = recorder.take()  # prefill: (B*T, L, k); a decode step: (B, L, k)
                    width = T if step == 0 else 1
                    e = got.experts.view(len(batch), width, L, k).cpu().numpy()
                    wt = got.weights.view(len(batch), width, L, k).float().cpu().numpy()
                    p = got.probs.view(len(batch), width, L, E).cpu().numpy() if probs is not None else None
                    nr = (
                        norm_recorder.take(got.experts).view(len(batch), width, L, k).cpu().numpy()
                        if norms is not None
                        else None
                    )
                    ah = ahead_recorder.take().view(len(batch), width, L, D, k).numpy() if ahead is not None else None
                    for r, w in enumerate(batch):
                        m = lengths[r]
                        # prefill: the prompt sits at the right end of the padded row
                        src = slice(T - m, T) if step == 0 else slice(0, 1)
                        dst = slice(w.row, w.row + m) if step == 0 else slice(w.row + m + step - 1, w.row + m + step)
                        experts[dst] = e[r, src]
                        weights[dst] = wt[r, src]
                        if p is not None:
                            probs[dst] = p[r, src]
                        if nr is not None:
                            norms[dst] = nr[r, src]
                        if ah is not None:
                            ahead[dst] = ah[r, src]

                new = self.decoder.run(ids, mask, N, self._generator(batch[0].doc_id), store).cpu().numpy()
                for r, i in enumerate(rows):
                    full[i] = self._with_generated(shard.windows[i], new[r].astype(np.int32))
        whole = replace(shard, windows=full)
        table = self._table(whole, experts, weights, probs, norms, ahead)
        phase = np.full(n, DECODE, np.int32)
        for w in shard.windows:
            phase[w.row : w.row + len(w.ids)] = PREFILL
        return table.append_column(self.phase_field, phase_array(phase))

    @staticmethod
    def _with_generated(prompt: Window, new: np.ndarray) -> Window:
        """The prompt's window extended by its generated tokens (no word or tag for those)."""
        pad = np.full(len(new), -1, np.int32)
        return replace(
            prompt,
            ids=np.concatenate([prompt.ids, new]),
            word_index=None if prompt.word_index is None else np.concatenate([prompt.word_index, pad]),
            upos=None if prompt.upos is None else np.concatenate([prompt.upos, pad]),
        )


def teacher_forced(shard: PromptShard, table: pa.Table) -> Shard:
    """The generated rows of `table` as a plain shard: one window per document holding its prompt and
    generated ids, for a `ShardComputer` (one teacher-forced forward of the whole sequence)."""
    ids = table.column("token_id").to_numpy().astype(np.int32, copy=True)  # writable: the computer hands it to torch
    windows = [
        replace(w, ids=ids[w.row : w.row + len(w.ids) + shard.generate], word_index=None, upos=None)
        for w in shard.windows
    ]
    return Shard(shard.index, windows, shard.rows, shard.next_doc)


def teacher_forced_agreement(computer: GenerationComputer, shard: PromptShard) -> dict:
    """Decode `shard`'s prompts, run the same full sequences teacher-forced (no cache, no padding
    within a sequence), and compare their routing row for row, per phase and MoE layer:
    {"prefill"|"decode": {"tokens", "first", "set_equal", "overlap", "layers": {layer: {...}}}}
    with the shares as in `routelens compare` (first choice equal, top-k set equal, mean overlap / k)."""
    from routelens.capture.agreement import CompareCounts
    from routelens.store.schema import nested_to_numpy

    generated = computer.compute(shard)
    forced = ShardComputer.compute(computer, teacher_forced(shard, generated))
    a = nested_to_numpy(generated.column("experts"), computer.k)
    b = nested_to_numpy(forced.column("experts"), computer.k)
    phase = generated.column("phase").combine_chunks().indices.to_numpy().astype(np.int64)
    counts = CompareCounts(len(PHASES), computer.L, computer.k)
    counts.update(a, b, phase)
    out = {}
    for p, name in enumerate(PHASES):
        n = int(counts.tokens[p])
        if not n:
            continue
        layers = {
            str(layer): {
                "first": counts.first[p, j] / n,
                "set_equal": counts.set_equal[p, j] / n,
                "overlap": counts.overlap[p, j] / (n * computer.k),
            }
            for j, layer in enumerate(computer.routing.moe_layers)
        }
        out[name] = {
            "tokens": n,
            "first": counts.first[p].sum() / (n * computer.L),
            "set_equal": counts.set_equal[p].sum() / (n * computer.L),
            "overlap": counts.overlap[p].sum() / (n * computer.L * computer.k),
            "layers": layers,
        }
    return out
