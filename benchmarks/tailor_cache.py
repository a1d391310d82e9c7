"""Frozen-prefix caching: epoch time of the EfficientNet tailor demo with and without it.

    flock /tmp/finetuner-cpu.lock python benchmarks/tailor_cache.py [--size 64] [--train 5000] [--eval 1000] [--epochs 3]

Both runs: EfficientNet-Lite0 (ImageNet weights) cut before its classifier, every pretrained
layer frozen, a new 128-d head; Fashion-MNIST resized to SIZE x SIZE, 3 channels (the defaults are
the demo's: 64 x 64, 5000 training and 1000 held-out items, batch 128, learning rate 1e-3); the same seed,
data, batches and head initialisation. "without": `fit(..., cache_prefix=False)`, the whole
network runs forward every epoch (the peer: what a training loop does with a frozen backbone).
"with": the default, the frozen part runs once and the head trains on the cached features.
Epoch time is wall-clock from one epoch's end to the next, evaluation on the held-out items
included; epoch 1 is timed from the `fit` call (the probe, the cache, the "before" evaluation).
Prints both sides, the ratio of the mean time of epochs 2..N, and mAP@10 / precision@10 of both
(the same result: caching changes the cost, not the training).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import finetuner  # noqa: E402
from finetuner.demos.tailor import efficientnet_lite0, fashion_rgb  # noqa: E402
from finetuner.engine.callbacks import Callback  # noqa: E402


class EpochClock(Callback):
    """Wall-clock time at the end of every epoch (after its evaluation)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_epoch_end(self, trainer, logs: dict) -> None:
        self.ends.append(time.perf_counter())


def run(base: torch.nn.Module, train, test, cache: bool, epochs: int) -> dict:
    """Fit a copy of `base` (frozen, cut before its classifier, new 128-d head) with or without
    the frozen-prefix cache. Returns the epoch wall-clock times (s; epoch 1 from the `fit` call),
    the mean of epochs 2..N, the whole fit's time, the cache's time (None without it) and mAP@10
    before / after, precision@10 after, on `test`."""
    clock = EpochClock()
    start = time.perf_counter()
    result = finetuner.fit(copy.deepcopy(base), train, test, to_embedding_model=True, freeze=True, output_dim=128,
                           epochs=epochs, batch_size=128, learning_rate=1e-3, cache_prefix=cache, callbacks=[clock], verbose=False)
    total = time.perf_counter() - start
    times = [b - a for a, b in zip([start] + clock.ends[:-1], clock.ends)]
    return {"epoch_s": times, "later_mean_s": sum(times[1:]) / max(len(times) - 1, 1), "total_s": total,
            "mAP@10_before": result.metrics_before["mAP@10"], "mAP@10_after": result.metrics_after["mAP@10"],
            "precision@10_after": result.metrics_after["precision@10"],
            "cache_s": result.settings.get("prefix_cache", {}).get("seconds")}


def main() -> None:
    """Parse the arguments, run both sides on the same data and model, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--train", type=int, default=5000, help="training items")
    parser.add_argument("--eval", type=int, default=1000, help="held-out items (Fashion-MNIST test set)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="default: $FINETUNER_DATA, else the download cache")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    train = fashion_rgb(args.train, False, args.size, args.data_dir)
    test = fashion_rgb(args.eval, True, args.size, args.data_dir)
    base = efficientnet_lite0(args.size)
    print(f"EfficientNet-Lite0 frozen + 128-d head, Fashion-MNIST {args.size}x{args.size}, {args.train} train / "
          f"{args.eval} eval items, {args.epochs} epochs, batch 128, {torch.get_num_threads()} threads")
    sides = {"without cache (full forward)": run(base, train, test, False, args.epochs),
             "with frozen-prefix cache": run(base, train, test, True, args.epochs)}
    print(f"{'':32} {'epoch 1 s':>10} {'epochs 2+ s':>12} {'total s':>9} {'mAP@10 before':>14} {'after':>8} "
          f"{'P@10 after':>11}")
    for name, r in sides.items():
        print(f"{name:32} {r['epoch_s'][0]:10.2f} {r['later_mean_s']:12.3f} {r['total_s']:9.2f} "
              f"{r['mAP@10_before']:14.4f} {r['mAP@10_after']:8.4f} {r['precision@10_after']:11.4f}")
    off, on = sides.values()
    print(f"speed-up of epochs after the first: {off['later_mean_s'] / on['later_mean_s']:.1f}x "
          f"(target >= 10x); whole fit: {off['total_s'] / on['total_s']:.1f}x; "
          f"mAP@10 after differs by {abs(off['mAP@10_after'] - on['mAP@10_after']):.5f}, "
          f"precision@10 by {abs(off['precision@10_after'] - on['precision@10_after']):.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **sides}, indent=2))


if __name__ == "__main__":
    main()
