"""Quality of the model `routelens demo` trains, against the targets it must meet on 2 CPU cores.

train time            <= 240 s
validation loss       below a unigram model's, per domain (ratio printed)
balance               largest expert share <= 2x uniform at every layer (held-out text)
informative routing   share of consecutive tokens with the same first expert >= 2/E at some layer

python benchmarks/bench_demo_model.py                      # trains into a temporary directory
python benchmarks/bench_demo_model.py --model routelens-demo/model --corpus routelens-demo/corpus
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an already trained demo model (default: train one now)")
    parser.add_argument("--corpus", type=Path, help="the embedded corpus directory (default: write it)")
    args = parser.parse_args()

    from routelens.corpus.builtin import write_builtin_corpus
    from routelens.training import train as training
    from routelens.training.evaluate import routing_health

    work = Path(tempfile.mkdtemp(prefix="routelens-bench-demo-"))
    corpus_dir = args.corpus or work / "corpus"
    if args.corpus is None:
        write_builtin_corpus(corpus_dir, progress=False)
    specs = [f"{p.stem}={p}" for p in sorted(corpus_dir.glob("*.txt"))]
    model = args.model or training.train(specs, work / "model", training.DEMO_CONFIG, progress=True)
    meta = json.loads((Path(model) / "training.json").read_text())
    health = routing_health(model, specs)

    ok = True

    def check(name: str, value: str, passed: bool) -> None:
        nonlocal ok
        ok &= passed
        print(f"  {'ok  ' if passed else 'FAIL'} {name:<44} {value}")

    E = health["num_experts"]
    print(f"demo model: {meta['model']['parameters']:,} parameters, {meta['steps']} steps, {meta['tokens']:,} tokens")
    check(
        "train time <= 240 s",
        f"{meta['train_seconds']:.0f} s ({meta['tokens_per_second']:,.0f} tokens/s)",
        meta["train_seconds"] <= 240,
    )
    for domain, v in meta["val"].items():
        ratio = v["loss"] / v["unigram_loss"]
        check(
            f"val loss {domain} < unigram",
            f"{v['loss']:.3f} vs {v['unigram_loss']:.3f} (ratio {ratio:.2f})",
            ratio < 0.9,
        )
    worst = max(health["max_load_ratio"])
    per_layer = ", ".join(f"{r:.2f}" for r in health["max_load_ratio"])
    check("largest expert share / uniform <= 2", f"{worst:.2f}x (per layer {per_layer})", health["balanced"])
    best = max(health["first_repeat_rate"])
    per_layer = ", ".join(f"{r:.3f}" for r in health["first_repeat_rate"])
    check(
        f"same first expert >= 2/E = {2 / E:.3f} somewhere",
        f"{best:.3f} = {best * E:.2f}x 1/E (per layer {per_layer})",
        health["informative"],
    )
    print("all targets met" if ok else "some targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
