"""The Labeler: label search results in a local web page while the model tunes in the background.

    finetuner.fit(embed_model, unlabeled_items, interactive=True)   # or: finetuner label --model ... --data ...

A page (served on 127.0.0.1) shows a query and its nearest items under the current model; the
user ticks the relevant ones. Every label goes to SQLite in the output folder before it is
acknowledged; a background worker tunes the model with the Tuner on all labels so far (session
format, on the shared engine) and swaps the new version in; the next queries are those the
model is least sure about (active learning, `finetuner.labeler.selection`).

Pieces: `Labeler` (the session, usable without a browser), `LabelStore` (SQLite),
`TuningWorker` (background rounds), `create_app` (FastAPI), `LabelerServer` (uvicorn thread).
Needs the `labeler` extra (fastapi, uvicorn, pillow); names load on first use, so importing
this package (e.g. for the command line) costs nothing.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Labeler": "finetuner.labeler.labeler",
    "LabelStore": "finetuner.labeler.store",
    "LabelerServer": "finetuner.labeler.server",
    "STRATEGIES": "finetuner.labeler.selection",
    "TuningWorker": "finetuner.labeler.worker",
    "create_app": "finetuner.labeler.app",
    "interactive_recipe": "finetuner.labeler.recipe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'finetuner.labeler' has no attribute {name!r}")
