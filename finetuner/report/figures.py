"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no display, no
pyplot global state), returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data.relation import relation_matrix
from .neighbours import Neighbours

NOT_METRICS = {"epoch", "train_loss", "eval_loss", "epoch_time_s", "train_samples_per_s", "num_queries"}
RELEVANT, IRRELEVANT = "#1a9641", "#d7191c"  # green / red frames and marks
DPI = 96


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def label_name(labels: np.ndarray, i: int, class_names: Sequence | None) -> str:
    """A readable label of item i: its class name (or id) for class labels, else its group
    and relevance ("group 12, rel 1")."""
    lab = labels[i]
    if np.ndim(lab) == 0:
        c = int(lab)
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)
    return f"group {int(lab[0])}, rel {float(lab[1]):g}"


def metric_names(history: list, metrics_before: dict) -> list[str]:
    """The eval metrics to plot per epoch (numeric, in the order the run logged them)."""
    keys = list(dict.fromkeys([*metrics_before, *(k for row in history for k in row)]))
    return [k for k in keys if k not in NOT_METRICS
            and any(isinstance(row.get(k), (int, float)) for row in history)]


def curves_figure(history: list, metrics_before: dict, metrics_after: dict | None = None) -> bytes | None:
    """Train / eval loss per epoch (left) and eval metrics per epoch (right); epoch 0 is the
    model before training. None when the history is empty."""
    if not history:
        return None
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    names = metric_names(history, metrics_before)
    fig = Figure(figsize=(11, 3.8) if names else (5.5, 3.8))
    axes = fig.subplots(1, 2 if names else 1, squeeze=False)[0]
    ax = axes[0]
    ax.plot(epochs, [row.get("train_loss", np.nan) for row in history], "o-", label="train loss")
    if any("eval_loss" in row for row in history):
        xs = ([0] if "eval_loss" in metrics_before else []) + epochs
        ys = ([metrics_before["eval_loss"]] if "eval_loss" in metrics_before else []) + \
             [row.get("eval_loss", np.nan) for row in history]
        ax.plot(xs, ys, "s--", label="eval loss")
    ax.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    if names:
        ax = axes[1]
        for name in names:
            xs = ([0] if name in metrics_before else []) + epochs
            ys = ([metrics_before[name]] if name in metrics_before else []) + [row.get(name, np.nan) for row in history]
            ax.plot(xs, ys, "o-", label=name)
        ax.set(xlabel="epoch (0 = before training)", ylabel="value", title="eval metrics per epoch")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def _related_pairs(labels: np.ndarray, limit: int = 400) -> list[tuple[int, int]]:
    """Up to `limit` (i, j) pairs of related items (same group, relation >= 0.5) for non-class labels."""
    groups = labels[:, 0].astype(np.int64)
    pairs = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) < 2:
            continue
        rel = relation_matrix(torch.as_tensor(labels[members])).numpy() >= 0.5
        for a, b in zip(*np.nonzero(np.triu(rel, 1))):
            pairs.append((int(members[a]), int(members[b])))
            if len(pairs) >= limit:
                return pairs
    return pairs


def map_figure(points_before: np.ndarray, points_after: np.ndarray, labels: np.ndarray,
               class_names: Sequence | None, titles: tuple[str, str]) -> bytes:
    """Side-by-side 2-D maps of the eval embeddings before and after training.

    Class labels: points coloured by class, with a legend of class names. Other labels
    (sessions, pairs, triplets): points coloured by group, and a line joins each related pair,
    so pairs pulled together by training show as shorter lines.

    Args:
        points_before / points_after: float [n, 2]. labels: int [n] or float [n, 2].
        titles: the two panels' titles.
    """
    fig = Figure(figsize=(12.5, 5.6))
    axes = fig.subplots(1, 2)
    if labels.ndim == 1:
        classes = np.unique(labels)
        palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for ax, pts, title in zip(axes, (points_before, points_after), titles):
            for i, c in enumerate(classes):
                m = labels == c
                name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
                ax.scatter(pts[m, 0], pts[m, 1], s=7, alpha=0.7, color=palette(i % palette.N), label=str(name),
                           linewidths=0)
            ax.set_title(title)
        if len(classes) <= 30:
            axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, fontsize=8, frameon=False)
    else:
        from matplotlib.collections import LineCollection

        groups = labels[:, 0].astype(np.int64)
        colour = matplotlib.colormaps["tab20"](np.unique(groups, return_inverse=True)[1] % 20)
        pairs = _related_pairs(labels)
        for ax, pts, title in zip(axes, (points_before, points_after), titles):
            if pairs:
                ax.add_collection(LineCollection([(pts[i], pts[j]) for i, j in pairs], colors="0.55", linewidths=0.6,
                                                 alpha=0.7, zorder=1))
            ax.scatter(pts[:, 0], pts[:, 1], s=9, c=colour, alpha=0.8, linewidths=0, zorder=2)
            ax.set_title(title + ("; lines join related items" if pairs else ""))
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)


def neighbours_figure(thumbnails: np.ndarray, found: list[Neighbours], labels: np.ndarray,
                      class_names: Sequence | None) -> bytes:
    """Image grid: per query a "before" and an "after" row: the query, then its neighbours
    nearest first, framed green when relevant and red when not, with label and distance.

    Args:
        thumbnails: uint8 [N, h, w] or [N, h, w, 3] (see `items.to_thumbnails`).
        found: from `nearest_neighbours`.
    """
    k = max(len(n.before) for n in found)
    rows = 2 * len(found)
    fig = Figure(figsize=(1.35 * (k + 1) + 0.6, 1.55 * rows))
    axes = fig.subplots(rows, k + 1, squeeze=False)
    grey = thumbnails.ndim == 3
    for r, nb in enumerate(found):
        for half, (idx, dist, rel) in enumerate(((nb.before, nb.before_distance, nb.before_relevant),
                                                 (nb.after, nb.after_distance, nb.after_relevant))):
            row = axes[2 * r + half]
            cells = [(nb.query, None, None)] + list(zip(idx, dist, rel))
            for c, ax in enumerate(row):
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(cells):
                    ax.axis("off")
                    continue
                i, d, ok = cells[c]
                ax.imshow(thumbnails[i], cmap="gray" if grey else None, vmin=0, vmax=255)
                name = label_name(labels, int(i), class_names)
                if d is None:
                    ax.set_title(f"query\n{name}", fontsize=7, fontweight="bold")
                    for s in ax.spines.values():
                        s.set_edgecolor("#2b83ba")
                        s.set_linewidth(2.5)
                else:
                    mark = "\u2713" if ok else "\u2717"
                    ax.set_title(f"{mark} {name}\nd={d:.3f}", fontsize=7, color=RELEVANT if ok else IRRELEVANT)
                    for s in ax.spines.values():
                        s.set_edgecolor(RELEVANT if ok else IRRELEVANT)
                        s.set_linewidth(3)
            row[0].set_ylabel("before" if half == 0 else "after", fontsize=9, fontweight="bold")
    fig.subplots_adjust(hspace=0.55, wspace=0.15)
    return _png(fig)
