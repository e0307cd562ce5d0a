"""Overhead of `routelens.replay` against a plain forward, and what a bfloat16 rollout costs a float32 model.

overhead  a randomly initialised Mixtral (hidden 256, 8 layers, 8 experts, top-2) on a batch of
          4 x 256 tokens: the plain forward, then the same forward under `routelens.replay` of
          the model's own routing (the torch function mode runs while each MoE block runs), each
          without and with the backward; best of `--repeat`, ratios printed in the same run.
demo      with `--demo DIR` (the output of `routelens demo`): trace DIR/model in bfloat16 over
          DIR/corpus, then replay that trace in float32 (`routelens.replay_report`):
          routing_differs, any_layer_differs, delta_logprob and kl of the float32 model forced to
          the bfloat16 routing.

    python benchmarks/bench_replay.py
    python benchmarks/bench_replay.py --demo routelens-demo --tokens 20000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def overhead(repeat: int) -> None:
    from transformers import MixtralConfig, MixtralForCausalLM

    import routelens
    from routelens.capture import RoutingRecorder

    torch.manual_seed(0)
    config = MixtralConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        num_local_experts=8,
        num_experts_per_tok=2,
        vocab_size=1024,
        max_position_embeddings=512,
    )
    model = MixtralForCausalLM(config).float().eval()
    ids = torch.randint(0, 1024, (4, 256))
    with torch.no_grad(), RoutingRecorder(model) as rec:
        model(input_ids=ids)
        routing = rec.take()
    experts = routing.experts.reshape(4, 256, 8, 2)

    def plain():
        with torch.no_grad():
            model(input_ids=ids)

    def replayed():
        with torch.no_grad(), routelens.replay(model, experts):
            model(input_ids=ids)

    def plain_train():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad()

    def replayed_train():
        with routelens.replay(model, experts):
            model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad()

    with torch.no_grad():
        base = model(input_ids=ids).logits
        with routelens.replay(model, experts):
            same = model(input_ids=ids).logits
    times = {name: _best(fn, repeat) for name, fn in [("plain", plain), ("replay", replayed)]}
    times |= {name: _best(fn, repeat) for name, fn in [("plain+bwd", plain_train), ("replay+bwd", replayed_train)]}
    print(f"overhead, Mixtral 8 x 8 experts top-2, 4 x 256 tokens, {torch.get_num_threads()} threads, best of {repeat}")
    print(f"  own routing replayed bit-equal: {torch.equal(base, same)}")
    print(
        f"  forward   plain {times['plain'] * 1e3:8.1f} ms  replay {times['replay'] * 1e3:8.1f} ms  "
        f"ratio {times['replay'] / times['plain']:.3f}"
    )
    print(
        f"  fwd+bwd   plain {times['plain+bwd'] * 1e3:8.1f} ms  replay {times['replay+bwd'] * 1e3:8.1f} ms  "
        f"ratio {times['replay+bwd'] / times['plain+bwd']:.3f}"
    )


def demo(folder: Path, tokens: int) -> None:
    import routelens

    corpora = sorted(p for p in (folder / "corpus").iterdir() if p.is_file() and not p.name.startswith("."))
    specs = [f"{p.stem}={p}" for p in corpora]
    with tempfile.TemporaryDirectory() as tmp:
        trace = routelens.trace(
            str(folder / "model"), specs, Path(tmp) / "bf16", dtype="bfloat16", max_tokens=tokens, progress=False
        )
        report = routelens.replay_report(str(folder / "model"), trace, progress=False)
    shown = {k: report[k] for k in ("routing_differs", "any_layer_differs", "delta_logprob", "kl")}
    print(f"demo model traced in bfloat16, replayed in float32 ({report['tokens']:,} tokens):")
    print(json.dumps(shown, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--demo", type=Path, help="a `routelens demo` output folder (model/ and corpus/)")
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens per domain to trace with --demo")
    args = parser.parse_args()
    overhead(args.repeat)
    if args.demo is not None:
        demo(args.demo, args.tokens)


if __name__ == "__main__":
    main()
