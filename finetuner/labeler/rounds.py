"""One tuning round of the labeler: the labels read as one snapshot, a copy of the model trained on
them, its checkpoint saved, and only then the new model swapped in. A round can be cancelled
(the page's Finish with `cancel_round`, Ctrl-C): it then stops at its next batch and the model
stays as it was."""

from __future__ import annotations

import copy
import threading
import time

from ..engine.callbacks import Callback
from ..models.saving import save
from ..recipes.run import recipe_arguments
from .sessions import session_data, session_map


class RoundCancelled(Exception):
    """A tuning round was cancelled before it finished; the model is unchanged."""


class CancelRound(Callback):
    """Raise `RoundCancelled` at the end of the batch during which `event` was set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_batch_end(self, trainer, loss: float) -> None:
        if self.event.is_set():
            raise RoundCancelled("the tuning round was cancelled; the model is unchanged")


def train_round(labeler, cancel: threading.Event) -> dict:
    """Run one round of `labeler` (see `Labeler.train`) and return its record.

    Raises:
        RoundCancelled: `cancel` was set while it trained.
        ValueError: no label yet; whatever the recipe raises (the model is then unchanged).
    """
    start = time.perf_counter()
    sessions, num_submissions = labeler.store.snapshot()  # one transaction: labels and their count agree
    data = session_data(labeler.items, sessions, link=labeler.link_sessions)
    last = labeler.store.last_round()
    trained = set(last["queries"]) if last else set()
    fresh = {q: m for q, m in sessions.items() if q not in trained}
    before = session_map(labeler.embeddings, fresh, labeler.distance)["session_mAP"] if fresh else None

    kwargs = dict(labeler.train_kwargs)
    kwargs["seed"] = int(kwargs.get("seed", 42)) + labeler.version
    kwargs.setdefault("verbose", False)
    if "callbacks" in recipe_arguments(labeler.recipe):
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), CancelRound(cancel)]
    candidate = copy.deepcopy(labeler.current_model())
    candidate.train()
    if cancel.is_set():
        raise RoundCancelled("the tuning round was cancelled before it started")
    result = labeler.recipe(candidate, data, labeler.eval_data, **kwargs)
    candidate = getattr(result, "model", candidate)
    candidate.eval()
    embeddings = labeler.embed(candidate)

    version = labeler.version + 1
    save(candidate, labeler.output_dir / "checkpoint")  # on disk first: a restart resumes from it
    labeler.store.set_meta("model_version", str(version))
    labeler.swap_model(candidate, embeddings, version)
    history = getattr(result, "history", []) or []
    record = {
        "num_labels": int(sum(len(m) for m in sessions.values())), "num_sessions": len(sessions),
        "num_submissions": num_submissions, "queries": sorted(sessions),
        "session_mAP_before": before, "session_mAP": session_map(embeddings, sessions, labeler.distance)["session_mAP"],
        "train_loss": history[-1].get("train_loss") if history else None,
        "eval_before": getattr(result, "metrics_before", {}) or {},
        "eval": getattr(result, "metrics_after", {}) or {},
        "seconds": time.perf_counter() - start,
    }
    labeler.store.add_round(version, record)
    return {"version": version, **record}
