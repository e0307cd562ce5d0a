"""Throughput of `routelens trace` against a plain forward pass and the common logits approach.

All three run in one process on the same model and the same batches of windows:
  plain    model(input_ids, attention_mask) — the cost of running the model at all
  trace    routelens.trace(...) end to end: tokenize, forward with router hooks, write Parquet
  common   output_router_logits=True, logits to numpy, top-k in numpy, rows appended in Python
           (what analysis scripts usually do; it also recomputes rather than records the choice)

    python benchmarks/bench_trace.py                 # tiny Mixtral: hidden 256, 4 layers, 8 experts, top-2
    python benchmarks/bench_trace.py --tokens 50000  # quicker
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import SHARED_DATA, build_tokenizer


def corpus_texts(tokens: int) -> list[str]:
    path = SHARED_DATA / "domains" / "c4.txt"
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    else:  # a machine without ../shared: any deterministic English-like text will do
        rng = np.random.default_rng(0)
        words = "the router sends each token to two of eight experts and their outputs are combined".split()
        lines = [" ".join(rng.choice(words, size=200)) for _ in range(2000)]
    return lines[: max(50, tokens // 150)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200_000, help="tokens to trace (approximate)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for each method")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, MixtralConfig

    import routelens
    from routelens.trace import TraceConfig

    work = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    texts = corpus_texts(args.tokens)
    (work / "c4.txt").write_text("\n".join(texts) + "\n")
    tokenizer = build_tokenizer(texts[:200], vocab_size=2048)
    config = MixtralConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        num_local_experts=8,
        num_experts_per_tok=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(work / "model").eval()

    # The batches the tracer forms: windows of seq_len, longest first, batch_size per pass.
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    ids = [np.asarray(x[:], dtype=np.int64) for x in ids]
    windows = [w[s : s + args.seq_len] for w in ids for s in range(0, len(w), args.seq_len)]
    total = sum(len(w) for w in windows)
    windows.sort(key=len, reverse=True)
    batches = []
    for b in range(0, len(windows), args.batch_size):
        group = windows[b : b + args.batch_size]
        T = len(group[0])
        x = torch.full((len(group), T), tokenizer.pad_token_id)
        m = torch.zeros((len(group), T), dtype=torch.long)
        for r, w in enumerate(group):
            x[r, : len(w)] = torch.from_numpy(w)
            m[r, : len(w)] = 1
        batches.append((x, m))

    @torch.inference_mode()
    def plain():
        for x, m in batches:
            model(input_ids=x, attention_mask=m, use_cache=False)

    def traced(verify: bool = True):
        out = work / "trace"
        shutil.rmtree(out, ignore_errors=True)
        routelens.trace(
            str(work / "model"),
            [f"c4={work / 'c4.txt'}"],
            out,
            TraceConfig(seq_len=args.seq_len, batch_size=args.batch_size, progress=False, verify=verify),
        )

    @torch.inference_mode()
    def common():
        rows = []
        k = config.num_experts_per_tok
        for x, m in batches:
            out = model(input_ids=x, attention_mask=m, use_cache=False, output_router_logits=True)
            logits = [lg.float().numpy() for lg in out.router_logits]  # per layer (B*T, E)
            keep = m.reshape(-1).numpy().astype(bool)
            per_layer = []
            for lg in logits:
                probs = np.exp(lg - lg.max(-1, keepdims=True))
                probs /= probs.sum(-1, keepdims=True)
                top = np.argsort(-probs, axis=-1)[:, :k]
                w = np.take_along_axis(probs, top, -1)
                per_layer.append((top, w / w.sum(-1, keepdims=True)))
            for t in np.flatnonzero(keep):
                rows.append(
                    {"experts": [p[0][t].tolist() for p in per_layer], "weights": [p[1][t].tolist() for p in per_layer]}
                )
        return rows

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    plain()  # warm-up
    results = {
        "plain forward": best(plain),
        "routelens trace": best(traced),
        "trace --no-verify": best(lambda: traced(verify=False)),
        "common (logits->numpy)": best(common),
    }
    info = routelens.trace.summarize(work / "trace")
    base = total / results["plain forward"]
    print(
        f"tiny Mixtral (hidden 256, 4 layers, 8 experts, top-2), {total:,} tokens, "
        f"seq_len {args.seq_len}, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    for name, seconds in results.items():
        rate = total / seconds
        print(f"  {name:24s} {rate:10,.0f} tokens/s   {rate / base:5.2f}x plain")
    check = results["routelens trace"] / results["trace --no-verify"] - 1
    print(f"  the first-batch check costs {100 * check:+.1f}% of trace time (limit: 3%)")
    fp32_logits = 4 * config.num_local_experts
    print(
        f"  stored bytes per token-layer: {info['bytes_per_token_layer']:.2f} "
        f"(fp32 router logits: {fp32_logits}; ratio {info['bytes_per_token_layer'] / fp32_logits:.3f})"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
