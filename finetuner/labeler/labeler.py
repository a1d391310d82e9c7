"""`Labeler`: the labelling session behind the page, usable without a browser.

It holds the items, the current model and its embeddings, the label store and the
active-learning queue; `train()` runs one tuning round with the Tuner (`finetuner.fit`'s
embedding recipe on the shared engine) on every label so far and swaps the new model in.
The web app (`finetuner.labeler.app`) and the background worker (`finetuner.labeler.worker`)
only call its methods.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.labeled import LabeledData
from ..engine.predict import embed_batches
from ..models.saving import load, save
from ..recipes.run import recipe_arguments
from .display import render_item
from .items import as_items, fingerprint
from .selection import (RelevanceCalibrator, check_strategy, neighbours, pick_diverse,
                        uncertainty_scores)
from .rounds import RoundCancelled, train_round  # noqa: F401 (RoundCancelled: named in train's docstring)
from .sessions import session_map
from .store import Ack, LabelStore

SUBMISSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MARKS = 100
PENDING_TTL_S = 600.0  # a query handed to a page is not handed out again for this long
# fit arguments the labeler owns itself (its output folder, its own resume from the store)
RESERVED = ("output_dir", "resume")


class Labeler:
    """A labelling session: next query by active learning, labels to SQLite, tuning rounds.

    Args:
        model: the embedding model, a `torch.nn.Module` mapping a batch to [B, D]. It is not
            modified: each round trains a copy, which then becomes `labeler.model`.
        data: the items to label (see `as_items`): images as a numpy array, texts as a list.
        eval_data: optional labelled data (any form `fit` takes) scored after every round.
        output_dir: the folder of the label store (`labels.sqlite`), the latest tuned model
            (`checkpoint/`, to continue after a restart) and the saved model (`model/`).
        top_k: results shown per query (1..50).
        strategy: how the next query is chosen: "margin" (default), "entropy",
            "disagreement", "random" or "sequential" (see `finetuner.labeler.selection`).
        num_candidates: unlabelled items scored per model version (a random pool; >= 1).
        train_kwargs: arguments of the training recipe, as in `finetuner.fit` (loss, epochs,
            learning_rate, batch_size, device, callbacks, preprocess_fn, collate_fn, ...);
            each round passes them unchanged, except `seed` (+ the round number) and
            `verbose` (False unless given).
        recipe: the training recipe `(model, train_data, eval_data, **train_kwargs) ->
            FitResult`; default the embedding recipe `finetuner.recipes.embedding.fit_embedding`.
        display_fn: item -> dict for the page (see `render_item`, the default).
        link_sessions: merge pages joined by a relevant mark into one training session
            (relevance taken as transitive; see `finetuner.labeler.sessions.linked_sessions`).
        seed: seed of the candidate pools.

    Raises:
        TypeError: model is not a torch module, or an unknown name in `train_kwargs`.
        ValueError: bad `top_k`, `strategy`, `num_candidates`, too few items, `train_kwargs`
            naming output_dir / resume, or `output_dir` holding labels of other data.
    """

    def __init__(self, model: torch.nn.Module, data: Any, eval_data: Any = None, *,
                 output_dir: str | os.PathLike = "runs/labeler", top_k: int = 8, strategy: str = "margin",
                 num_candidates: int = 2000, train_kwargs: dict | None = None, recipe: Callable | None = None,
                 display_fn: Callable[[Any], dict] | None = None, link_sessions: bool = True,
                 seed: int = 0) -> None:
        from ..recipes.embedding import fit_embedding

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module (an embedding model), got {type(model).__name__}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
            raise ValueError(f"top_k: expected an int in 1..50, got {top_k!r}")
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"num_candidates: expected an int >= 1, got {num_candidates!r}")
        self.strategy = check_strategy(strategy)
        self.recipe = recipe or fit_embedding
        self.train_kwargs = dict(train_kwargs or {})
        self._check_train_kwargs()
        self.items = as_items(data)
        self.top_k = min(top_k, len(self.items) - 1)
        self.num_candidates, self.seed, self.link_sessions = num_candidates, seed, link_sessions
        self.eval_data, self.display_fn = eval_data, display_fn or render_item
        self.output_dir = Path(output_dir)
        self.distance = self._distance()

        self.store = LabelStore(self.output_dir / "labels.sqlite")
        self._check_fingerprint()
        self.last_error: str | None = None
        self.model = model
        self.version = int(self.store.get_meta("model_version", "0"))
        if self.version > 0:
            self._restore_checkpoint()
        self.model.eval()
        self.embeddings = self._embed(self.model)
        self._previous_embeddings: torch.Tensor | None = None

        self._lock = threading.RLock()  # model, embeddings, version, queue
        self._train_lock = threading.Lock()  # one round at a time
        self._labelled = set(self.store.sessions())
        self._pending: dict[int, float] = {}
        self._blocked: set[int] = set()
        self._ranking: tuple[int, np.ndarray, dict] | None = None
        self._draws = 0
        self._metric_cache: tuple | None = None
        self.training = False
        self._cancel = threading.Event()  # set: the running round stops at its next batch
        self.on_label: Callable[[], None] | None = None  # the worker's wake-up call

    # ---- setup -----------------------------------------------------------------------------
    def _check_train_kwargs(self) -> None:
        reserved = sorted(set(self.train_kwargs) & set(RESERVED))
        if reserved:
            raise ValueError(f"{reserved[0]}: the labeler keeps its own output folder and continues from its "
                             f"label store; pass output_dir to the labeler instead and drop {reserved}")
        known = recipe_arguments(self.recipe)
        unknown = sorted(set(self.train_kwargs) - known)
        if unknown:
            raise TypeError(f"train_kwargs: unknown argument(s) {unknown}; known: {sorted(known - set(RESERVED))}")

    def _distance(self) -> str:
        loss = self.train_kwargs.get("loss")
        return getattr(loss, "distance", None) or self.train_kwargs.get("distance") or "cosine"

    def _check_fingerprint(self) -> None:
        fp = fingerprint(self.items)
        known = self.store.get_meta("data_fingerprint")
        if known is None:
            self.store.set_meta("data_fingerprint", fp)
            self.store.set_meta("num_items", str(len(self.items)))
        elif known != fp:
            raise ValueError(
                f"output_dir: {str(self.output_dir)!r} holds labels of other data ({self.store.get_meta('num_items')} "
                f"items, fingerprint {known}; this data: {len(self.items)} items, fingerprint {fp}); "
                "use another output_dir, or the same data in the same order")

    def _restore_checkpoint(self) -> None:
        """Load OUTPUT_DIR/checkpoint (weights only, into the given model); a missing or
        unreadable one is reported (a warning, and `last_error` on the page) and the session
        continues from the given model with every stored label."""
        path = self.output_dir / "checkpoint"
        try:
            load(path, model=self.model, map_location=str(next(self.model.parameters()).device))
        except Exception as e:  # noqa: BLE001 - any damage: keep the labels, start from the given model
            self.last_error = (f"could not read the checkpoint of model version {self.version} ({type(e).__name__}: "
                               f"{e}); continuing from the given model with the stored labels")
            warnings.warn(f"output_dir: {self.last_error}", stacklevel=3)

    @torch.no_grad()
    def _embed(self, model: torch.nn.Module) -> torch.Tensor:
        data = LabeledData(self.items, np.zeros(len(self.items), dtype=np.int64))
        return embed_batches(model, data, batch_size=int(self.train_kwargs.get("eval_batch_size", 256)),
                             preprocess_fn=self.train_kwargs.get("preprocess_fn"),
                             collate_fn=self.train_kwargs.get("collate_fn"))

    # ---- active learning queue ------------------------------------------------------------
    def _rank(self) -> None:
        """Score a fresh candidate pool under the current model (called once per version)."""
        n, k = len(self.items), self.top_k
        free = np.setdiff1d(np.arange(n), np.fromiter(self._labelled, dtype=np.int64, count=len(self._labelled)))
        if self.strategy == "sequential":
            pool = free[: self.num_candidates]
        else:
            rng = np.random.default_rng([self.seed, self.version, self._draws])
            pool = free if len(free) <= self.num_candidates else rng.choice(free, self.num_candidates, replace=False)
        self._draws += 1
        scores = {}
        if len(pool):
            dist, idx = neighbours(self.embeddings, pool, 2 * k, self.distance)
            previous = None
            if self.strategy == "disagreement" and self._previous_embeddings is not None:
                previous = neighbours(self._previous_embeddings, pool, k, self.distance)[1]
            rng = np.random.default_rng([self.seed, self.version, self._draws, 1])
            s = uncertainty_scores(self.strategy, dist, idx, k, calibrator=self._calibrator(),
                                   previous_idx=previous, rng=rng)
            pool = pool[np.argsort(-s, kind="stable")]
            # shown on the page as a rank in the pool: 1.0 = the least sure page of this version
            scores = dict(zip(pool.tolist(), (1.0 - np.arange(len(pool)) / len(pool)).tolist()))
        self._ranking = (self.version, pool, scores)
        self._blocked = set()

    def _calibrator(self) -> RelevanceCalibrator | None:
        if self.strategy != "entropy":
            return None
        rows = self.store.labels()
        rel = np.array([r[2] for r in rows])
        if len(rows) < 2 or len(np.unique(rel)) < 2:
            return None
        q = torch.as_tensor([r[0] for r in rows])
        i = torch.as_tensor([r[1] for r in rows])
        from ..losses.distances import paired_distance

        d = paired_distance(self.embeddings[q], self.embeddings[i], distance=self.distance).numpy()
        return RelevanceCalibrator(d, rel)

    def next_query(self) -> dict | None:
        """The next query to label and its result page under the current model.

        The query is the most uncertain unlabelled candidate (see `strategy`) that is not
        already on another open page and not among the results of a query handed out earlier
        in this model version (so pages stay diverse).

        Returns:
            {"query": position, "results": [positions, nearest first], "distances": [floats],
            "model_version": int, "uncertainty": the query's uncertainty rank in the scored
            pool, in (0, 1] (1 = the least sure), or None}, or None when every item is
            labelled (or on a page handed out in the last `PENDING_TTL_S` seconds).
        """
        with self._lock:
            if self._ranking is None or self._ranking[0] != self.version:
                self._rank()
            now = time.time()
            self._pending = {q: t for q, t in self._pending.items() if now - t < PENDING_TTL_S}
            skip = self._labelled | set(self._pending)
            query = pick_diverse(self._ranking[1], skip, self._blocked)
            if query is None:  # this pool is used up: draw a fresh one, then relax diversity
                self._rank()
                query = pick_diverse(self._ranking[1], skip, set())
            if query is None:
                return None
            dist, idx = neighbours(self.embeddings, np.array([query]), self.top_k, self.distance)
            results = idx[0].tolist()
            self._pending[query] = now
            self._blocked.update(results)
            return {"query": query, "results": results, "distances": [round(float(d), 6) for d in dist[0]],
                    "model_version": self.version, "uncertainty": self._ranking[2].get(query)}

    def display(self, position: int) -> dict:
        """What the page shows for the item at `position` (`display_fn`), plus its "id"."""
        return {"id": int(position), **self.display_fn(self.items[position])}

    # ---- labels ------------------------------------------------------------------------------
    def _check_position(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < len(self.items):
            raise ValueError(f"{name}: expected an item position in 0..{len(self.items) - 1}, got {value!r}")
        return int(value)

    def submit(self, query: int, marks: list[tuple[int, bool]] | dict[int, bool], *,
               submission_id: str | None = None, model_version: int | None = None) -> Ack:
        """Store the labels of one result page; returns once they are on disk.

        Args:
            query: the query's item position.
            marks: (result position, relevant) pairs, or {position: relevant}; 1..100 of them,
                distinct, none equal to the query.
            submission_id: the client's id for this page (1-64 of A-Z a-z 0-9 _ -); the same id
                sent again stores nothing. Default: a fresh random id.
            model_version: the version that produced the page (default: the current one).

        Returns:
            `Ack` (duplicate, num_labels, num_sessions).

        Raises:
            ValueError: any argument out of range (the message names it); nothing is stored then.
        """
        query = self._check_position(query, "query")
        pairs = list(marks.items()) if isinstance(marks, dict) else list(marks)
        if not 1 <= len(pairs) <= MAX_MARKS:
            raise ValueError(f"marks: expected 1..{MAX_MARKS} labelled results, got {len(pairs)}")
        seen = set()
        for n, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"marks[{n}]: expected (item position, relevant), got {pair!r}")
            item = self._check_position(pair[0], f"marks[{n}].item")
            if item == query:
                raise ValueError(f"marks[{n}].item: the query itself ({query}) cannot be its own result")
            if item in seen:
                raise ValueError(f"marks[{n}].item: item {item} is labelled twice in one page")
            if not isinstance(pair[1], (bool, np.bool_)) and pair[1] not in (0, 1):
                raise ValueError(f"marks[{n}].relevant: expected true/false, got {pair[1]!r}")
            seen.add(item)
        if submission_id is None:
            submission_id = uuid.uuid4().hex
        if not isinstance(submission_id, str) or not SUBMISSION_ID.match(submission_id):
            raise ValueError(f"submission_id: expected 1-64 characters of A-Z a-z 0-9 _ -, got {submission_id!r}")
        version = self.version if model_version is None else model_version
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= self.version:
            raise ValueError(f"model_version: expected an int in 0..{self.version}, got {model_version!r}")
        ack = self.store.add(submission_id, query, [(int(i), bool(r)) for i, r in pairs], version)
        with self._lock:
            self._pending.pop(query, None)
            self._labelled.add(query)
        if self.on_label is not None:
            self.on_label()
        return ack

    # ---- tuning -----------------------------------------------------------------------------
    def sessions_since_last_round(self) -> int:
        """Submissions stored after the last training round started."""
        last = self.store.last_round()
        return self.store.submission_count() - (last["num_submissions"] if last else 0)

    def train(self) -> dict:
        """One tuning round (`finetuner.labeler.rounds`): train a copy of the current model on
        every label so far (labels and their count read in one transaction) with the recipe and
        `train_kwargs`, save it to OUTPUT_DIR/checkpoint, then make it the current model
        (version + 1) and record the round.

        Returns:
            the round's record: version, num_labels, num_sessions, num_submissions, seconds,
            session_mAP_before (the old model on sessions it was not trained on, or None),
            session_mAP (the new model on all sessions), eval metrics, train_loss.

        Raises:
            ValueError: no label yet; whatever the recipe raises (the model is then unchanged).
            RoundCancelled: `cancel_round()` was called while it trained (model unchanged).
        """
        with self._train_lock:
            self.training = True
            self._cancel.clear()
            try:
                return train_round(self, self._cancel)
            finally:
                self.training = False

    def cancel_round(self) -> None:
        """Ask the running round (if any) to stop at its next batch; the model stays unchanged."""
        self._cancel.set()

    def current_model(self) -> torch.nn.Module:
        """The model in use now."""
        with self._lock:
            return self.model

    def embed(self, model: torch.nn.Module) -> torch.Tensor:
        """Embeddings of every item under `model`: float tensor [N, D]."""
        return self._embed(model)

    def swap_model(self, model: torch.nn.Module, embeddings: torch.Tensor, version: int) -> None:
        """Make `model` (whose checkpoint is saved) the current one, as model version `version`."""
        with self._lock:
            self._previous_embeddings = self.embeddings
            self.model, self.embeddings, self.version = model, embeddings, version
        self.last_error = None

    # ---- reading -------------------------------------------------------------------------
    def metrics(self) -> dict:
        """The retrieval metric on the labelled sessions under the current model (cached per
        version and label count): {"session_mAP": float or None, "num_scored_sessions": int}."""
        num_labels, _ = self.store.counts()
        key = (self.version, num_labels)
        if self._metric_cache is None or self._metric_cache[0] != key:
            with self._lock:
                emb = self.embeddings
            self._metric_cache = (key, session_map(emb, self.store.sessions(), self.distance))
        return self._metric_cache[1]

    def status(self) -> dict:
        """What the page's header shows: model version, label counts, metrics, training state."""
        num_labels, num_sessions = self.store.counts()
        last = self.store.last_round()
        eval_metrics = {k: v for k, v in (last or {}).get("eval", {}).items() if isinstance(v, (int, float))}
        return {
            "model_version": self.version, "num_labels": num_labels, "num_sessions": num_sessions,
            "num_items": len(self.items), "strategy": self.strategy, "top_k": self.top_k,
            "training": self.training, "pending_sessions": self.sessions_since_last_round(),
            **self.metrics(),
            "session_mAP_before": last.get("session_mAP_before") if last else None,
            "eval": eval_metrics, "last_round_seconds": last.get("seconds") if last else None,
            "last_error": self.last_error,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Save the current model with `finetuner.save` (atomic), default to OUTPUT_DIR/model."""
        with self._lock:
            model = self.model
        return save(model, Path(path) if path is not None else self.output_dir / "model")

    def close(self) -> None:
        """Close the label store."""
        self.store.close()
