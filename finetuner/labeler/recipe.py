"""`fit(model, unlabeled_data, interactive=True)`: the Labeler as a recipe of `finetuner.fit`."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from ..config import TrainArgs
from ..recipes.result import FitResult
from ..recipes.run import recipe_arguments
from .labeler import RESERVED, Labeler
from .server import LabelerServer

DEFAULT_OUTPUT_DIR = "runs/labeler"

# the labeler's own arguments of fit(..., interactive=True), with their defaults
LABELER_ARGS = {
    "host": "127.0.0.1", "port": 0, "open_browser": True, "top_k": 8, "strategy": "margin",
    "num_candidates": 2000, "min_new_sessions": 1, "display_fn": None, "max_body_bytes": 64 * 1024,
}


def as_module(model: Any) -> Any:
    """A text model given as a path / hub id or a `SentenceTransformer` becomes a `TextEncoder`
    (the labeler embeds items with a torch module); anything else is returned as it is."""
    from ..models.text import TextEncoder, is_sentence_transformer

    if isinstance(model, (str, os.PathLike)):
        return TextEncoder.from_pretrained(model)
    if is_sentence_transformer(model):
        return TextEncoder.from_sentence_transformer(model)
    return model


def interactive_recipe(base: Callable) -> Callable:
    """Wrap a training recipe (e.g. `fit_embedding`) into the interactive one.

    The returned function takes the base recipe's keyword arguments (loss, epochs,
    learning_rate, batch_size, device, callbacks, ...: each tuning round passes them on
    unchanged) plus the labeler's own (`LABELER_ARGS`) and `output_dir`; `resume` is not
    accepted (the labeler always continues from its store). Its signature says so, so
    `finetuner.fit` rejects unknown names before anything starts.
    """
    base_params = [p for name, p in inspect.signature(base).parameters.items()
                   if p.kind == p.KEYWORD_ONLY and name not in RESERVED]
    given = {p.name for p in base_params}
    base_params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(TrainArgs(), name))
                    for name in sorted(recipe_arguments(base) - given - set(RESERVED))]

    def fit_interactive(model: Any, train_data: Any, eval_data: Any = None, **kwargs: Any) -> FitResult:
        """Label `train_data` in a local web page while `model` is tuned in the background.

        Opens (or prints) http://127.0.0.1:PORT/#token=..., serves pages until the page's
        Finish button or Ctrl-C, saves the tuned model to OUTPUT_DIR/model, copies its
        weights into `model` (trained in place, as with every `fit`) and returns a
        `FitResult` whose history holds one entry per tuning round.

        Args:
            model: the embedding model (torch module -> [B, D]), or a text model path / hub id
                / `SentenceTransformer` (wrapped into a `TextEncoder`).
            train_data: the unlabelled items (numpy array of images, list of texts, ...).
            eval_data: optional labelled data scored after every round.
            **kwargs: the base recipe's arguments, and host ("127.0.0.1"), port (0 = free),
                open_browser (True), top_k (8), strategy ("margin"), num_candidates
                (2000), min_new_sessions (1), display_fn, max_body_bytes, output_dir
                ("runs/labeler": labels.sqlite, checkpoint/, model/).

        Raises:
            TypeError, ValueError: as `Labeler` and `LabelerServer`, before the server starts.
        """
        model = as_module(model)
        opts = {k: kwargs.pop(k, v) for k, v in LABELER_ARGS.items()}
        output_dir = kwargs.pop("output_dir", None) or DEFAULT_OUTPUT_DIR
        labeler = Labeler(model, train_data, eval_data, output_dir=output_dir, top_k=opts["top_k"],
                          strategy=opts["strategy"], num_candidates=opts["num_candidates"], train_kwargs=kwargs,
                          recipe=base, display_fn=opts["display_fn"])
        try:
            server = LabelerServer(labeler, opts["host"], opts["port"], min_new_sessions=opts["min_new_sessions"],
                                   max_body_bytes=opts["max_body_bytes"])
            server.serve_forever(open_browser=opts["open_browser"])
            path = labeler.save()
            if labeler.model is not model:
                model.load_state_dict(labeler.model.state_dict())
            # one entry per tuning round; the trained queries' list is for the labeler itself
            rounds = [{k: v for k, v in r.items() if k != "queries"} for r in labeler.store.rounds()]
            num_labels, num_sessions = labeler.store.counts()
            return FitResult(
                model=model, history=rounds,
                metrics_before=rounds[0]["eval_before"] if rounds else {},
                metrics_after=rounds[-1]["eval"] if rounds else {},
                output_dir=str(output_dir),
                settings={"interactive": True, "model_path": str(path), "model_version": labeler.version,
                          "num_labels": num_labels, "num_sessions": num_sessions, **opts,
                          "display_fn": None, **{k: v for k, v in kwargs.items() if isinstance(v, (int, float, str))}})
        finally:
            labeler.close()

    own = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in LABELER_ARGS.items()]
    own += [inspect.Parameter("interactive", inspect.Parameter.KEYWORD_ONLY, default=True),
            inspect.Parameter("output_dir", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_OUTPUT_DIR)]
    names = {p.name for p in own}
    positional = list(inspect.signature(fit_interactive).parameters.values())[:3]
    fit_interactive.__signature__ = inspect.Signature(positional + own + [p for p in base_params if p.name not in names])
    return fit_interactive
