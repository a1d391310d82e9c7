"""Assemble a report: figures and tables from a `ReportData`, written as OUT_DIR/report.html
plus the PNGs beside it."""

from __future__ import annotations

import datetime
import html
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import figures
from .html import data_uri, kv_table, metrics_table, page, text_neighbours, timings_table
from .items import displayable
from .neighbours import nearest_neighbours, pick_queries
from .projection import METHODS, normalise, project_2d, resolve_method
from .store import ReportData, load_run

REPORT = "report.html"
PNGS = ("curves.png", "embedding_map.png", "neighbours.png")


def _write_atomic(path: Path, content: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    os.replace(tmp, path)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _check_data(data: ReportData) -> None:
    """ValueError when items, labels and embeddings do not describe the same N items."""
    if not data.has_embeddings:
        return
    n = len(data.labels)
    for name, value in (("items", data.items), ("embeddings_before", data.embeddings_before),
                        ("embeddings_after", data.embeddings_after)):
        if value is not None and len(value) != n:
            raise ValueError(f"{name}: expected {n} rows (one per label), got {len(value)}")
    for name in ("embeddings_before", "embeddings_after"):
        if np.ndim(getattr(data, name)) != 2:
            raise ValueError(f"{name}: expected a float array [N, D], got shape {np.shape(getattr(data, name))}")
    if data.labels.ndim not in (1, 2) or (data.labels.ndim == 2 and data.labels.shape[1] != 2):
        raise ValueError(f"labels: expected [N] class ids or [N, 2] (group, relevance), got shape {data.labels.shape}")


def _map_sample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Indices of at most `max_points` items for the map: a random sample for class labels,
    whole groups (so related items stay together) for other labels."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels.ndim == 1:
        return np.sort(rng.choice(n, max_points, replace=False))
    groups = labels[:, 0].astype(np.int64)
    keep, total = [], 0
    for g in rng.permutation(np.unique(groups)):
        members = np.flatnonzero(groups == g)
        if total + len(members) > max_points and keep:
            break
        keep.append(members)
        total += len(members)
    return np.sort(np.concatenate(keep))


def _headline(data: ReportData) -> str:
    """One line: the main metric before -> after (Spearman for scored pairs, else nDCG@k, the
    BEIR / MTEB headline), and the eval set size."""
    before, after = data.metrics_before, data.metrics_after
    names = ([k for k in before if k == "spearman_cosine"] or [k for k in before if k.startswith("nDCG@")]
             or [k for k in before if k not in ("num_queries", "eval_loss")])
    if not names or names[0] not in after:
        return "no eval data: metrics, map and neighbours need eval_data"
    key = names[0]
    b, a = before[key], after[key]
    return html.escape(f"{key}: {b:.4f} \u2192 {a:.4f} ({a - b:+.4f}) on {data.num_eval_items or len(data.labels)} "
                       f"eval items")


def render_report(data: ReportData, out_dir: str | os.PathLike, *, num_queries: int = 4, k: int = 5,
                  projection: str = "auto", max_points: int = 2000, seed: int = 0) -> Path:
    """Write OUT_DIR/report.html (self-contained) and its figures as PNGs beside it.

    Sections (HTML ids): "metrics" (before / after / change table), "curves" (train and eval
    loss and eval metrics per epoch), "embedding-map" (2-D map of the eval embeddings before
    and after, side by side, coloured by label), "neighbours" (for `num_queries` random eval
    queries, their `k` nearest eval items before and after, relevant ones marked; image
    thumbnails for image items, text otherwise), "settings" (settings and per-epoch timings).
    A section with nothing to show (e.g. no eval data) says so.

    Args:
        data: what to show (see `ReportData`; `load_run` reads it from a run folder).
        out_dir: folder for report.html, curves.png, embedding_map.png, neighbours.png.
        num_queries: queries in the neighbours section, >= 0.
        k: neighbours shown per query, >= 1.
        projection: "auto" (UMAP when umap-learn is installed, else PCA), "pca" or "umap".
        max_points: at most this many eval items on the map (a seeded sample), >= 2.
        seed: seed of the query choice and the map sample.

    Returns:
        Path of report.html.

    Raises:
        ValueError: a bad argument, or items / labels / embeddings of different lengths.
        ImportError: projection="umap" without umap-learn.
    """
    _check_int("num_queries", num_queries, 0)
    _check_int("k", k, 1)
    _check_int("max_points", max_points, 2)
    if projection not in METHODS:
        raise ValueError(f"projection: expected one of {METHODS}, got {projection!r}")
    method = resolve_method(projection)
    _check_data(data)
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes] = {}
    sections: dict[str, str] = {}

    if data.metrics_before and data.metrics_after:
        sections["metrics"] = metrics_table(data.metrics_before, data.metrics_after)
    else:
        sections["metrics"] = "<p class='note'>no eval data was given, so there are no metrics before and after</p>"

    curves = figures.curves_figure(data.history, data.metrics_before, data.metrics_after)
    if curves is not None:
        pngs["curves.png"] = curves
        sections["curves"] = f'<img alt="training curves" src="{data_uri(curves)}">'

    if data.has_embeddings and len(data.labels) >= 2:
        idx = _map_sample(data.labels, max_points, seed)
        pb, desc_b = project_2d(normalise(data.embeddings_before[idx], data.distance), method, seed)
        pa, desc_a = project_2d(normalise(data.embeddings_after[idx], data.distance), method, seed)
        png = figures.map_figure(pb, pa, data.labels[idx], data.class_names,
                                 (f"before training ({desc_b})", f"after training ({desc_a})"))
        pngs["embedding_map.png"] = png
        sampled = f"{len(idx)} of {len(data.labels)} eval items" if len(idx) < len(data.labels) else \
            f"all {len(idx)} eval items"
        sections["embedding-map"] = (
            f'<img alt="embedding map before and after" src="{data_uri(png)}">'
            f"<p class='note'>{sampled}, each space projected on its own ({method.upper()}"
            f"{'; embeddings L2-normalised as the cosine distance sees them' if data.distance == 'cosine' else ''}).</p>")

        queries = pick_queries(data.labels, num_queries, seed) if num_queries else []
        if queries:
            found = nearest_neighbours(data.embeddings_before, data.embeddings_after, data.labels, queries, k,
                                       data.distance)
            if isinstance(data.items, np.ndarray):
                png = figures.neighbours_figure(data.items, found, data.labels, data.class_names)
                pngs["neighbours.png"] = png
                body = f'<img alt="nearest neighbours before and after" src="{data_uri(png)}">'
            else:
                body = text_neighbours(data.items, found, data.labels, data.class_names)
            total = data.num_eval_items or len(data.labels)
            scope = f"all {len(data.labels)} eval items" if total <= len(data.labels) else \
                f"a stored sample of {len(data.labels)} of the {total} eval items"
            sections["neighbours"] = (
                f"<p class='note'>{len(queries)} queries drawn at random (seed {seed}, not chosen by how much they "
                f"changed); their {k} nearest items among {scope} by {data.distance} distance d, nearest first; "
                f"&#10003; relevant (green), &#10007; not relevant (red).</p>{body}")
        else:
            sections["neighbours"] = "<p class='note'>no eval item has a relevant item to find</p>"

    settings = dict(data.settings)
    settings.setdefault("distance", data.distance)
    sections["settings"] = f"<h3>settings</h3>{kv_table(settings)}<h3>timings</h3>{timings_table(data.history)}"

    for name in PNGS:  # a PNG from an earlier report that this one does not have would mislead
        if name not in pngs and (out / name).exists():
            (out / name).unlink()
    for name, png in pngs.items():
        _write_atomic(out / name, png)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    footer = f"built by finetuner on {stamp} in {time.perf_counter() - start:.1f} s"
    path = out / REPORT
    _write_atomic(path, page(data.title, _headline(data), sections, footer))
    return path


def build_report(run_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """Build RUN_DIR/report.html from a finished run folder (`fit(..., output_dir=RUN_DIR)`).

    Args:
        run_dir: the run's output folder (metrics.json, and report_data/ when it had eval data).
        **kwargs: num_queries, k, projection, max_points, seed (see `render_report`).

    Returns:
        Path of report.html.

    Raises:
        FileNotFoundError: RUN_DIR is not a finished run (see `load_run`).
        ValueError: a bad argument (see `render_report`).
    """
    return render_report(load_run(run_dir), run_dir, **kwargs)


def write_report(out_dir: str | os.PathLike, items: Any, labels: Any, embeddings_before: Any, embeddings_after: Any,
                 *, metrics_before: dict | None = None, metrics_after: dict | None = None,
                 history: list | None = None, settings: dict | None = None, class_names: Sequence | None = None,
                 distance: str = "cosine", ks: Sequence[int] = (10,), title: str = "finetuner report",
                 **kwargs: Any) -> Path:
    """A report from any (items, labels, embeddings before, embeddings after), for tasks and
    tools that do not go through `fit`'s output folder.

    Args:
        out_dir: where report.html and the PNGs go.
        items: N eval items: an image array ([N, H, W], [N, C, H, W], [N, H, W, C]) shown as
            thumbnails, or N texts / other objects shown as text.
        labels: int [N] class ids, or float [N, 2] (group, relevance) as in `LabeledData.labels`.
        embeddings_before / embeddings_after: float [N, D] arrays or tensors.
        metrics_before / metrics_after: computed with `evaluate_embeddings` (cut-offs `ks`,
            `distance`) when not given.
        history: per-epoch dicts (train_loss, eval_loss, metrics, epoch_time_s, ...), if any.
        settings: name -> value shown in the settings section.
        class_names: names of the class ids.
        distance: "cosine", "euclidean" or "sqeuclidean".
        **kwargs: num_queries, k, projection, max_points, seed (see `render_report`).

    Returns:
        Path of report.html.

    Raises:
        ValueError: lengths or shapes do not match, or a bad argument.
    """
    from ..evaluation import evaluate_embeddings

    lab = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    lab = lab.astype(np.int64) if lab.ndim == 1 else lab.astype(np.float32)
    before = np.asarray(embeddings_before.detach().float().cpu() if hasattr(embeddings_before, "detach")
                        else embeddings_before, dtype=np.float32)
    after = np.asarray(embeddings_after.detach().float().cpu() if hasattr(embeddings_after, "detach")
                       else embeddings_after, dtype=np.float32)
    if len(items) != len(lab):
        raise ValueError(f"items: expected {len(lab)} items (one per label), got {len(items)}")
    data = ReportData(items=displayable(items), labels=lab, embeddings_before=before, embeddings_after=after,
                      class_names=list(class_names) if class_names is not None else None,
                      format="class" if lab.ndim == 1 else "pair", distance=distance,
                      history=list(history or []), settings=dict(settings or {}), num_eval_items=len(lab),
                      title=title)
    _check_data(data)
    data.metrics_before = dict(metrics_before) if metrics_before is not None else \
        evaluate_embeddings(before, lab, ks=tuple(ks), distance=distance)
    data.metrics_after = dict(metrics_after) if metrics_after is not None else \
        evaluate_embeddings(after, lab, ks=tuple(ks), distance=distance)
    return render_report(data, out_dir, **kwargs)
