"""What a run keeps for its report (OUTPUT_DIR/report_data/), and `ReportData`, the one input
the report is drawn from."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.labeled import LabeledData
from ..io import atomic_dir
from .items import displayable

DATA_DIR = "report_data"
MAX_ITEMS = 10_000  # eval items kept for the report (a seeded random sample beyond that)


@dataclass
class ReportData:
    """Everything a report shows, independent of the task that produced it.

    Attributes:
        items: the eval items as shown: uint8 thumbnails [N, h, w] or [N, h, w, 3], or N strings.
        labels: int64 [N] (class ids) or float32 [N, 2] (group, relevance), as in `LabeledData.labels`.
        embeddings_before / embeddings_after: float32 [N, D] eval embeddings of the model before
            and after training (D may differ between the two), or None.
        class_names: `class_names[label]` for class labels, or None.
        format: the eval data's format ("class", "session", "pair", "triplet").
        distance: the retrieval distance ("cosine", "euclidean", "sqeuclidean").
        metrics_before / metrics_after: eval metrics (metric name -> float).
        history: one dict per epoch (epoch, train_loss, eval_loss, metrics, epoch_time_s, ...).
        settings: the run's settings (name -> value).
        num_eval_items: eval items of the run (more than N when a sample was kept).
        title: the report's title.
    """

    items: Any = None
    labels: np.ndarray | None = None
    embeddings_before: np.ndarray | None = None
    embeddings_after: np.ndarray | None = None
    class_names: list | None = None
    format: str = "class"
    distance: str = "cosine"
    metrics_before: dict = field(default_factory=dict)
    metrics_after: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    num_eval_items: int = 0
    title: str = "finetuner report"

    @property
    def has_embeddings(self) -> bool:
        return self.labels is not None and self.embeddings_before is not None and self.embeddings_after is not None


def _as_float_matrix(x: Any, name: str, n: int) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected a float array [{n}, D] (one row per eval item), got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def save_report_data(output_dir: str | os.PathLike, eval_data: LabeledData, embeddings_before: Any,
                     embeddings_after: Any, *, distance: str = "cosine", max_items: int = MAX_ITEMS,
                     seed: int = 0) -> Path:
    """Store what `build_report` needs from a run's eval set in OUTPUT_DIR/report_data/, atomically.

    Files: embeddings_before.npy, embeddings_after.npy (float32 [n, D]), labels.npy (int64 [n]
    or float32 [n, 2]), items.npy (uint8 thumbnails) or items.json (texts), index.npy (int64
    [n]: positions of the kept items in eval_data) and meta.json (format, class names,
    distance, eval set size). Metrics, history and settings stay in OUTPUT_DIR/metrics.json.

    Args:
        output_dir: the run's output folder.
        eval_data: the eval set (`LabeledData`, N items), in the order the embeddings follow.
        embeddings_before / embeddings_after: float tensor or array [N, D].
        distance: the distance the run ranked by.
        max_items: keep at most this many items (a random sample with `seed` beyond that), so a
            100k-item eval set does not write gigabytes.
        seed: seed of that sample.

    Returns:
        The report_data folder.

    Raises:
        ValueError: an embedding array is not [N, D], or max_items < 1.
    """
    n = len(eval_data)
    if not isinstance(max_items, int) or max_items < 1:
        raise ValueError(f"max_items: expected an int >= 1, got {max_items!r}")
    before = _as_float_matrix(embeddings_before, "embeddings_before", n)
    after = _as_float_matrix(embeddings_after, "embeddings_after", n)
    index = np.arange(n) if n <= max_items else np.sort(np.random.default_rng(seed).choice(n, max_items, replace=False))
    items = displayable(eval_data.take(index) if n > max_items else eval_data.items)
    meta = {"format": eval_data.format, "class_names": eval_data.class_names, "distance": distance,
            "num_eval_items": n}
    with atomic_dir(Path(output_dir) / DATA_DIR) as tmp:
        np.save(tmp / "embeddings_before.npy", before[index])
        np.save(tmp / "embeddings_after.npy", after[index])
        np.save(tmp / "labels.npy", eval_data.labels(index))
        np.save(tmp / "index.npy", index)
        if isinstance(items, np.ndarray):
            np.save(tmp / "items.npy", items)
        else:
            (tmp / "items.json").write_text(json.dumps(items, ensure_ascii=False))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return Path(output_dir) / DATA_DIR


def load_run(run_dir: str | os.PathLike) -> ReportData:
    """Read a run folder written by `fit(..., output_dir=RUN_DIR)` into a `ReportData`.

    Reads RUN_DIR/metrics.json (history, metrics, settings) and, when the run had eval data,
    RUN_DIR/report_data/ (see `save_report_data`).

    Raises:
        FileNotFoundError: RUN_DIR or RUN_DIR/metrics.json does not exist (the message says what
            a run folder holds).
        ValueError: metrics.json is not valid JSON.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run_dir: expected the output_dir of a finished fit, got {str(run)!r}, "
                                "which is not a folder")
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"run_dir: {str(run)!r} has no metrics.json; expected the output_dir of a "
                                "finished fit (it writes metrics.json at the end)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{metrics_path}: not valid JSON ({e})") from e
    data = ReportData(metrics_before=metrics.get("metrics_before") or {},
                      metrics_after=metrics.get("metrics_after") or {},
                      history=metrics.get("history") or [], settings=metrics.get("settings") or {},
                      title=f"finetuner report: {run.resolve().name}")
    store = run / DATA_DIR
    if (store / "meta.json").is_file():
        meta = json.loads((store / "meta.json").read_text())
        data.format, data.class_names = meta.get("format", "class"), meta.get("class_names")
        data.distance, data.num_eval_items = meta.get("distance", "cosine"), int(meta.get("num_eval_items", 0))
        data.labels = np.load(store / "labels.npy")
        data.embeddings_before = np.load(store / "embeddings_before.npy")
        data.embeddings_after = np.load(store / "embeddings_after.npy")
        if (store / "items.npy").is_file():
            data.items = np.load(store / "items.npy")
        else:
            data.items = json.loads((store / "items.json").read_text())
    return data
