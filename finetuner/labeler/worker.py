"""The background worker: tunes the model whenever new labels have arrived."""

from __future__ import annotations

import logging
import threading

from .rounds import RoundCancelled

log = logging.getLogger("finetuner.labeler")


class TuningWorker:
    """A daemon thread that runs `labeler.train()` when at least `min_new_sessions` pages were
    labelled since the last round, or when asked (`request_round`). Labels that arrive during a
    round are used by the next one. An error in a round is kept in `labeler.last_error` (shown
    on the page) and the old model stays in use.

    Args:
        labeler: the `Labeler` to tune.
        min_new_sessions: labelled pages that trigger a round (>= 1).
        poll_s: how often the thread checks, in seconds, when nothing wakes it.

    Raises:
        ValueError: min_new_sessions < 1.
    """

    def __init__(self, labeler, min_new_sessions: int = 1, poll_s: float = 1.0) -> None:
        if isinstance(min_new_sessions, bool) or not isinstance(min_new_sessions, int) or min_new_sessions < 1:
            raise ValueError(f"min_new_sessions: expected an int >= 1, got {min_new_sessions!r}")
        self.labeler, self.min_new_sessions, self.poll_s = labeler, min_new_sessions, poll_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self._forced = False
        self._failed_at: int | None = None  # submissions count when a round failed: retry on new labels
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> "TuningWorker":
        """Start the thread and hook it to the labeler's new-label signal."""
        self.labeler.on_label = self._wake.set
        self._thread = threading.Thread(target=self._run, name="finetuner-labeler-tuning", daemon=True)
        self._thread.start()
        return self

    def request_round(self) -> None:
        """Run a round as soon as the current one (if any) ends, even below `min_new_sessions`."""
        self._forced = True
        self._wake.set()

    def stop(self, cancel: bool = False) -> None:
        """Stop the thread and return once it has ended: after the running round (if any) ends,
        or, with `cancel`, after it stops at its next batch (the model then stays unchanged).
        Either way no round runs once this returns, so the labeler can be saved and closed."""
        self._stop.set()
        if cancel:
            self.labeler.cancel_round()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.labeler.on_label = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            new = self.labeler.sessions_since_last_round()
            if new < 1 or (new < self.min_new_sessions and not self._forced):
                continue
            total = self.labeler.store.submission_count()
            if total == self._failed_at and not self._forced:
                continue
            self._forced = False
            try:
                record = self.labeler.train()
                self.rounds += 1
                self._failed_at = None
                log.info("tuning round done: model version %d, %d labels, %.1f s", record["version"],
                         record["num_labels"], record["seconds"])
            except RoundCancelled:
                log.info("tuning round cancelled; the model is unchanged")
            except Exception as e:  # keep serving the old model; the page shows the error
                self.labeler.last_error = f"{type(e).__name__}: {e}"
                self._failed_at = total
                log.warning("tuning round failed: %s", self.labeler.last_error)
