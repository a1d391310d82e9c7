"""The public face of the library: `fit` (a dispatch table from model, data and task to a recipe),
`embed`, `evaluate`, `save`, `load`, `export` (ONNX), `display` and `to_embedding_model`."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data.formats import to_labeled
from .data.labeled import LabeledData
from .engine.predict import embed_batches
from .models.export import export
from .models.saving import load, save
from .models.tailor import display, is_tailored, to_embedding_model
from .recipes.result import FitResult
from .recipes.run import recipe_arguments
from .recipes.classification import fit_classification, looks_like_classification
from .recipes.embedding import fit_embedding
from .recipes.text import fit_text, is_text_model

# (task, does it take this model and these arguments?, recipe): `fit` uses the first row that does
RECIPES = (
    ("classification", looks_like_classification, fit_classification),  # a sequence classifier, num_labels
    ("text", is_text_model, fit_text),  # a text model path / id, a SentenceTransformer, a HF module + collate_fn
    ("embedding", lambda model, kwargs: True, fit_embedding),  # any torch module mapping a batch to [B, D]
)
# fit(..., task=NAME)
TASKS = {"embedding": fit_embedding, "text": fit_text, "classification": fit_classification}


def fit(model: Any, train_data: Any, eval_data: Any = None, **kwargs: Any) -> FitResult:
    """Fine-tune `model` on `train_data` and report how much it improved on `eval_data`.

    The minimal call `fit(model, train_data)` trains with good defaults; every other argument
    is optional. The model is trained in place and also returned in the result.

    Args:
        model: an embedding model: a `torch.nn.Module` mapping a batch of items to a float
            tensor [B, D], or a Keras (TensorFlow backend) / Paddle model doing the same
            (`finetuner.models.backends`; trained in place, `result.model` is that model).
            Text models (a model folder or hub id string, a
            `sentence_transformers.SentenceTransformer`, or a module wrapping a Hugging Face
            transformer given with a `collate_fn`) go to `finetuner.recipes.text.fit_text`, whose
            defaults suit them (in-batch negatives, lr 2e-5, 1 epoch, bf16, length-grouped
            batches; CoSENT for scored pairs) and which adds pooling / normalize / max_length.
        train_data: labeled data in class, pair, triplet or session format, as a list of
            tuples or dicts, numpy `(X, y)`, a pandas DataFrame, a `datasets.Dataset`, a CSV /
            JSONL path or a `LabeledData` (see `finetuner.data.formats`). Every format works
            with every loss: pairs and triplets are mined inside each batch.
        eval_data: labeled data in the same forms; metrics are computed before training,
            after every epoch and at the end (each item a query against all others).

    Keyword Args:
        task: a name of `TASKS` ("embedding", "text", "classification"), or None to infer it
            from `RECIPES`: a text classifier (`finetuner.recipes.classification`, whose
            arguments then apply) when the model has a sequence-classification head or
            `num_labels` is given with a model path; a text embedding model
            (`finetuner.recipes.text`) for a model path / id or a SentenceTransformer; else
            embedding (the arguments below).
        Training settings (`finetuner.config.TrainArgs`, one name in every recipe; each recipe
        has its own defaults): epochs, batch_size, learning_rate, optimizer, optimizer_kwargs,
        weight_decay, scheduler, warmup_ratio, max_grad_norm, gradient_accumulation_steps,
        device, precision, seed, callbacks, early_stopping, output_dir, resume,
        eval_batch_size, verbose, report.
        loss: "SiameseLoss" (default), "TripletLoss", "InfoNCELoss", a loss object, or any
            callable `(embeddings [B, D], labels) -> scalar`.
        distance, margin, miner: passed to a loss given by name; distance "cosine" (default),
            "euclidean", "sqeuclidean"; margin 0.5 for SiameseLoss / TripletLoss; miner "all"
            (default), "hard", "semihard", "easy".
        epochs (10), batch_size (256), learning_rate (1e-3), optimizer ("adam"; "adamw", "sgd",
            a class or an instance), optimizer_kwargs, scheduler ("cosine" decay to 0 per step;
            "linear", "constant", None or a factory), warmup_ratio (0).
        num_items_per_class: items of one class per batch for class data (4).
        preprocess_fn: applied to each item; collate_fn: list of items -> model input.
        device: "auto" (GPU when there is one), "cpu", "cuda". precision: "fp32" (default for
            this recipe), "bf16", "fp16" or "auto" (`finetuner.engine.precision`).
        gradient_accumulation_steps (1), max_grad_norm (None).
        callbacks: `finetuner.engine.callbacks.Callback` objects; early_stopping: patience in
            epochs, or a dict of `EarlyStopping` arguments.
        seed (42), format (None: detected), ks: cut-offs of the metrics ((10,)).
        output_dir: writes the model (output_dir/model), metrics.json, metrics.csv,
            TensorBoard logs and a checkpoint per epoch. resume: True resumes from the last
            checkpoint in output_dir, or a checkpoint folder.
        verbose: progress bar and the before/after table (True).
        to_embedding_model, layer_name, freeze, freeze_layer, output_dim, projection_head,
            input_size, pooling: turn a general model into an embedding model first (see
            `finetuner.to_embedding_model`; probed with two training items). The seed form
            `fit(model, data, freeze_layer=-1, output_dim=128)` freezes all but a new 128-d head.
        cache_prefix: "auto" (default): when the layers below the trainable ones are frozen,
            run the data through them once and train only the rest on the cached outputs
            (`finetuner.models.prefix_cache`); True also with a `preprocess_fn`; False never.
        interactive: True opens the Labeler (`finetuner.labeler`): `train_data` may be unlabeled
            items; a local page (http://127.0.0.1) shows queries and their nearest items, each
            labelled page is stored and the model is tuned in the background with the other
            arguments above (epochs, learning_rate, batch_size, loss, device, callbacks, ...),
            queries chosen by active learning. Also host, port, open_browser, top_k, strategy,
            num_candidates, min_new_sessions, display_fn, max_body_bytes (see
            `finetuner.labeler.recipe`). Returns when the page's Finish button is pressed.

    Returns:
        `FitResult` with `.model`, `.history`, `.metrics_before`, `.metrics_after`.

    Raises:
        TypeError: an unknown keyword argument (the message lists the known ones), or a model
            of an unsupported type.
        ValueError: bad data or settings, raised before training starts (empty data, one
            class, mixed formats, missing labels, a model whose output is not [B, D], eval data
            where no query has a relevant item, ...).
        FloatingPointError: the loss became NaN or infinite during training.
    """
    from .labeler.recipe import interactive_recipe
    from .models.backends import detect_framework
    from .recipes.tailored import fit_with_prefix_cache, pop_tailor_args, tailor_for_fit

    kwargs = dict(kwargs)  # the caller's dict stays as it was
    if detect_framework(model) in ("keras", "paddle"):  # trained through a torch adapter (finetuner.models.backends)
        from .recipes.frameworks import fit_framework_model

        return fit_framework_model(fit, model, train_data, eval_data, kwargs)
    interactive, task = kwargs.pop("interactive", False), kwargs.pop("task", None)
    tailor, cache_prefix = pop_tailor_args(kwargs), kwargs.pop("cache_prefix", "auto")
    if tailor:  # general model -> embedding model before any recipe sees it
        model = tailor_for_fit(model, train_data, tailor, kwargs)
    name, recipe = choose_recipe(model, task, kwargs)
    if interactive:  # the Labeler wraps the recipe: it tunes with it in the background
        recipe = interactive_recipe(recipe)
    unknown = sorted(set(kwargs) - recipe_arguments(recipe))
    if unknown:
        raise TypeError(f"fit: unknown argument(s) {unknown}; known arguments: {sorted(recipe_arguments(recipe))}")
    if is_tailored(model) and name in ("embedding", "text") and not interactive:
        # a frozen prefix is run once; the rest trains on its outputs with the embedding recipe
        return fit_with_prefix_cache(recipe, model, train_data, eval_data, cache_prefix=cache_prefix, **kwargs)
    return recipe(model, train_data, eval_data, **kwargs)


def choose_recipe(model: Any, task: str | None, kwargs: dict) -> tuple[str, Callable]:
    """(task name, recipe) for this model and these arguments: the first row of `RECIPES` that
    takes them, within `task` when one is given ("embedding" covers the text recipe).

    Raises:
        ValueError: an unknown task.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)} or None (inferred from the model), got {task!r}")
    rows = [r for r in RECIPES if task is None or r[0] == task or (task == "embedding" and r[0] == "text")]
    for name, takes, recipe in rows:
        if len(rows) == 1 or takes(model, kwargs):
            return name, recipe
    return rows[-1][0], rows[-1][2]


def _as_labeled(data: Any, name: str) -> LabeledData:
    """Unlabeled inputs (an array or a list of items) become class data with dummy labels."""
    if isinstance(data, LabeledData):
        return data
    if isinstance(data, np.ndarray) or (isinstance(data, torch.Tensor)):
        arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        return LabeledData(arr.astype(np.float32) if arr.dtype.kind == "f" else arr, np.zeros(len(arr)))
    try:
        return to_labeled(data, name=name)
    except (ValueError, TypeError):
        items = list(data)
        return LabeledData(items, np.zeros(len(items)))


def _as_torch_model(model: Any) -> torch.nn.Module:
    """A Keras / Paddle model wrapped by `finetuner.backends.adapt`; a torch module as it is."""
    if isinstance(model, torch.nn.Module):
        return model
    from .models.backends import adapt, detect_framework

    return adapt(model) if detect_framework(model) in ("keras", "paddle") else model


def embed(model: torch.nn.Module, data: Any, *, batch_size: int = 256, preprocess_fn: Callable | None = None,
          collate_fn: Callable | None = None) -> np.ndarray:
    """Embed items with `model`.

    Args:
        model: a torch module mapping a batch to [B, D] (or a Keras / Paddle model).
        data: labeled data (any form `fit` takes), a numpy array / tensor [N, ...], or a list of items.
        batch_size: items per forward pass.
        preprocess_fn / collate_fn: as in `fit`.

    Returns:
        float32 numpy array [N, D], in the order of `data`.
    """
    return embed_batches(_as_torch_model(model), _as_labeled(data, "data"), batch_size=batch_size,
                         preprocess_fn=preprocess_fn, collate_fn=collate_fn).numpy()


def evaluate(model: Any, data: Any, *, ks: Sequence[int] = (10,), distance: str = "cosine",
             batch_size: int = 256, preprocess_fn: Callable | None = None,
             collate_fn: Callable | None = None) -> dict:
    """Retrieval metrics of `model` on `data`, with trec_eval's definitions
    (`finetuner.evaluation.metrics`).

    - `RetrievalData` or a BEIR folder (its "test" split, else "dev"): each query ranks the
      whole corpus; graded qrels are nDCG's gains; a query with no relevant document counts
      as 0 (and "queries_without_relevant" says how many).
    - labeled data (any form `fit` takes): each item is a query against all the others
      (itself excluded); relevant = positive relation (same class, or a relevant match of the
      same session).

    Args:
        model: a torch module mapping a batch to [B, D], a text model path / id or a
            `SentenceTransformer` (loaded as a `TextEncoder`), or a Keras / Paddle model.
        data: see above. ks: cut-offs. distance: "cosine", "euclidean" or "sqeuclidean".
        batch_size, preprocess_fn, collate_fn: as in `embed`.

    Returns:
        dict with precision@k, recall@k, mAP@k, nDCG@k, MRR@k, hit@k for each k in `ks`, and
        num_queries (plus queries_without_relevant for query -> corpus data).

    Raises:
        ValueError: bad data (a qrels id missing from the corpus or the queries, duplicate ids,
            an empty corpus, ...), no query with a relevant item (labeled data), or a model
            whose output is not [B, D].
    """
    import os

    from .data.formats import to_eval_data
    from .data.retrieval import RetrievalData
    from .evaluation import evaluate_embeddings, evaluate_retrieval
    from .models.text import TextEncoder, is_sentence_transformer

    data = to_eval_data(data, "data")
    if isinstance(model, (str, os.PathLike)):
        model = TextEncoder.from_pretrained(model)
    elif is_sentence_transformer(model):
        model = TextEncoder.from_sentence_transformer(model)
    model = _as_torch_model(model)

    def emb(items: Any) -> torch.Tensor:
        items = items if isinstance(items, LabeledData) else LabeledData(items, np.zeros(len(items), np.int64))
        return embed_batches(model, items, batch_size=batch_size, preprocess_fn=preprocess_fn, collate_fn=collate_fn)

    if isinstance(data, RetrievalData):
        return evaluate_retrieval(emb(list(data.queries.values())), emb(list(data.corpus.values())), data,
                                  ks=tuple(ks), distance=distance)
    return evaluate_embeddings(emb(data), torch.from_numpy(data.labels()), ks=tuple(ks), distance=distance)
