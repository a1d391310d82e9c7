"""Fashion-MNIST main job: finetuner.fit vs a plain PyTorch loop doing the same work.

Same MLP (seed's 784-128-32), same data (60k train / 10k test), same loss (SiameseLoss,
cosine, margin 0.5, all pairs), same batches (class-balanced, 4 items per class, batch 256),
Adam 1e-3 with a cosine schedule. Each side runs in its own process so peak memory is its own.
Prints time per epoch, samples/s, peak RSS and retrieval metrics on the 10k test items.

    python benchmarks/fashion.py [--epochs 10] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _mlp():
    import torch

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


def run_finetuner(epochs: int) -> dict:
    import torch

    import finetuner
    from finetuner.toydata import generate_fashion

    train, test = generate_fashion(), generate_fashion(is_testset=True)
    torch.manual_seed(0)
    start = time.perf_counter()
    r = finetuner.fit(_mlp(), train, eval_data=test, epochs=epochs, verbose=False)
    total = time.perf_counter() - start
    train_time = sum(h["epoch_time_s"] for h in r.history)
    return {"epoch_s": train_time / epochs, "samples_per_s": len(train) * epochs / train_time, "total_s": total,
            "before": r.metrics_before, "after": r.metrics_after}


def run_plain(epochs: int) -> dict:
    """The loop a user would write by hand with the same pieces (no evaluation between epochs)."""
    import numpy as np
    import torch

    from finetuner.data.samplers import GroupBatchSampler
    from finetuner.evaluation import evaluate_embeddings
    from finetuner.losses import SiameseLoss
    from finetuner.toydata import generate_fashion

    train, test = generate_fashion(), generate_fashion(is_testset=True)
    torch.manual_seed(0)
    model, loss_fn = _mlp(), SiameseLoss(margin=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = GroupBatchSampler(train.groups, 256, 4, seed=42)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(sampler))
    X, y = train.items, torch.from_numpy(train.groups)

    def metrics():
        with torch.no_grad():
            emb = model(torch.from_numpy(test.items))
        return evaluate_embeddings(emb, torch.from_numpy(test.groups), ks=(10,))

    before, train_time = metrics(), 0.0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        for idx in sampler:
            idx = np.asarray(idx)
            loss = loss_fn(model(torch.from_numpy(X[idx])), y[idx])  # numpy gather: faster than torch's here
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        train_time += time.perf_counter() - start
    return {"epoch_s": train_time / epochs, "samples_per_s": len(train) * epochs / train_time,
            "before": before, "after": metrics()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-dir", default=os.environ.get("FINETUNER_DATA"))
    p.add_argument("--side", choices=["finetuner", "plain"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.data_dir:
        os.environ["FINETUNER_DATA"] = a.data_dir
    if a.side:  # child process: run one side, print JSON
        out = (run_finetuner if a.side == "finetuner" else run_plain)(a.epochs)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out, default=float))
        return
    rows = {}
    for side in ("plain", "finetuner"):
        proc = subprocess.run([sys.executable, __file__, "--side", side, "--epochs", str(a.epochs)],
                              capture_output=True, text=True, check=True)
        rows[side] = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
    print(f"Fashion-MNIST, MLP 784-128-32, {a.epochs} epochs, 60k train / 10k test, torch threads {os.cpu_count()}")
    print(f"| side | s/epoch | samples/s | peak RSS MB | mAP@10 before -> after | precision@10 before -> after |")
    print("|---|---|---|---|---|---|")
    for side, r in rows.items():
        print(f"| {side} | {r['epoch_s']:.2f} | {r['samples_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['before']['mAP@10']:.3f} -> {r['after']['mAP@10']:.3f} | "
              f"{r['before']['precision@10']:.3f} -> {r['after']['precision@10']:.3f} |")
    ratio = rows["finetuner"]["samples_per_s"] / rows["plain"]["samples_per_s"]
    print(f"finetuner / plain loop throughput: {ratio:.2f}x (finetuner also evaluates after every epoch; not in s/epoch)")


if __name__ == "__main__":
    main()
