"""finetuner: make a pretrained model better at your own task with one call, and see by how much.

    import finetuner
    result = finetuner.fit(model, train_data, eval_data)
    finetuner.save(result.model, "my-model")
"""

from __future__ import annotations

from .api import display, embed, evaluate, export, fit, load, save, to_embedding_model
from .data.labeled import LabeledData
from .recipes.result import FitResult

__version__ = "0.1.0"

__all__ = ["FitResult", "LabeledData", "embed", "evaluate", "display", "export", "fit", "load", "save",
           "to_embedding_model", "__version__"]
