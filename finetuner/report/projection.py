"""2-D maps of an embedding space: PCA always, UMAP when the `umap-learn` package is installed."""

from __future__ import annotations

import importlib.util

import numpy as np

METHODS = ("auto", "pca", "umap")


def resolve_method(method: str = "auto") -> str:
    """"auto" -> "umap" when umap-learn is importable, else "pca".

    Raises:
        ValueError: `method` is not one of `METHODS`.
        ImportError: "umap" was asked for and umap-learn is not installed.
    """
    if method not in METHODS:
        raise ValueError(f"projection: expected one of {METHODS}, got {method!r}")
    has_umap = importlib.util.find_spec("umap") is not None
    if method == "umap" and not has_umap:
        raise ImportError("projection='umap' needs the umap-learn package (pip install umap-learn); "
                          "use 'pca' or 'auto'")
    return "umap" if method == "umap" or (method == "auto" and has_umap) else "pca"


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """Project embeddings to 2-D for a scatter plot.

    PCA (Pearson 1901; scikit-learn's `PCA`) is linear and keeps global distances; UMAP
    (McInnes et al., 2018) keeps local neighbourhoods, so clusters read better. Cosine
    embeddings are L2-normalised first so the map shows the geometry the metric sees.

    Args:
        embeddings: float array [N, D], N >= 2.
        method: "pca", "umap" or "auto" (see `resolve_method`).
        seed: random state of UMAP.

    Returns:
        (points float32 [N, 2], a short description of the projection, e.g. "PCA, 41% of variance").

    Raises:
        ValueError: fewer than 2 rows, or an unknown method.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"embeddings: expected a float array [N >= 2, D], got shape {x.shape}")
    method = resolve_method(method)
    if x.shape[1] == 1:
        x = np.concatenate([x, np.zeros_like(x)], axis=1)
    if method == "umap":
        import umap

        points = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
        return np.asarray(points, dtype=np.float32), "UMAP"
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    points = pca.fit_transform(x)
    return points.astype(np.float32), f"PCA, {pca.explained_variance_ratio_.sum():.0%} of variance"


def normalise(embeddings: np.ndarray, distance: str) -> np.ndarray:
    """Rows scaled to unit length when `distance` is "cosine" (what the metric compares), else as given."""
    x = np.asarray(embeddings, dtype=np.float32)
    if distance == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x
