"""`TextClassifier`: a text classifier with its tokenizer and labels, what the classification
recipe trains and returns, and its save / load.

Its network is one of two kinds (`TextClassifier.head`):

- "sequence-classification": a transformers `*ForSequenceClassification` model (the encoder's
  pooler and a linear layer); saved in the `save_pretrained` layout, which
  `AutoModelForSequenceClassification.from_pretrained` also reads.
- "pooled": `PooledClassifier`, a sentence encoder (`TextEncoder`: transformer, pooling) and a
  linear layer over its L2-normalised embedding: SetFit's model (Tunstall et al., 2022); saved
  in the sentence-transformers layout plus `classifier_head.safetensors`, so
  `SentenceTransformer(folder)` also reads the tuned encoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.label_space import encode_labels
from ..data.samplers import LengthGroupedBatchSampler
from ..data.text_rows import TextRows, to_text_rows
from ..engine.predict import predict_batches
from ..evaluation.classification import classifier_eval_metrics
from ..io import FORMAT_VERSION, META, read_meta, write_json
from .hf import quiet_transformers
from .text import TextEncoder

KIND = "text-classifier"  # the `kind` in finetuner.json of a saved TextClassifier
HEAD_FILE = "classifier_head.safetensors"  # the linear layer of a saved PooledClassifier
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


class Predictions(NamedTuple):
    """What `TextClassifier.predict` returns.

    Attributes:
        labels: N predicted labels, each one of `classes` (int or str, as in the training data);
            for multi-label models a list per row of every label with probability >= threshold.
        probabilities: float32 numpy array [N, C]: softmax over the C classes (rows sum to 1),
            or independent sigmoids for multi-label models; column i is `classes[i]`.
    """

    labels: list
    probabilities: np.ndarray


class PooledClassifier(torch.nn.Module):
    """A sentence encoder and a linear layer over its L2-normalised sentence embedding.

    logits = W normalize(pool(encoder(tokens))) + b, W float [C, D]. The network of SetFit
    (Tunstall et al., 2022, "Efficient Few-Shot Learning Without Prompts"), with the head as a
    torch layer so the whole model can also be trained end to end. A text pair is encoded as one
    sequence (`[CLS] a [SEP] b [SEP]`, token type ids dropped), as the encoder saw it when it was
    tuned on joined pairs.

    Args:
        encoder: a `TextEncoder` (transformer + pooling [+ normalisation]); trained in place.
        num_labels: C, the number of outputs.

    Inputs (forward):
        input_ids, attention_mask: int64 [B, L] (other tokenizer outputs are ignored).
        Returns an object with `.logits`, float [B, C] (as transformers models do).
    """

    def __init__(self, encoder: TextEncoder, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.embedding_dim, int(num_labels))

    @property
    def config(self):
        """The transformer's config (its `id2label` names the classes)."""
        return self.encoder.sentence_transformer[0].auto_model.config

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        """L2-normalised sentence embeddings, float [B, D]."""
        emb = self.encoder({"input_ids": input_ids, "attention_mask": attention_mask})
        return F.normalize(emb, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any):
        """`SequenceClassifierOutput` whose `.logits` are float [B, C]."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.head(self.embed(input_ids, attention_mask)))

    def set_head(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Replace the head's weights: weight float [C, D], bias float [C] (e.g. a logistic
        regression fitted on the embeddings).

        Raises:
            ValueError: shapes other than [C, D] and [C].
        """
        w, b = torch.as_tensor(np.asarray(weight, np.float32)), torch.as_tensor(np.asarray(bias, np.float32))
        if tuple(w.shape) != tuple(self.head.weight.shape) or tuple(b.shape) != tuple(self.head.bias.shape):
            raise ValueError(f"head: expected weight {tuple(self.head.weight.shape)} and bias "
                             f"{tuple(self.head.bias.shape)}, got {tuple(w.shape)} and {tuple(b.shape)}")
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The encoder in the sentence-transformers layout, the head in `HEAD_FILE`."""
        from safetensors.torch import save_file

        self.encoder.sentence_transformer.save(str(folder))
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(Path(folder) / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, max_length: int | None = None,
                        map_location: str = "cpu") -> "PooledClassifier":
        """Load what `save_pretrained` wrote."""
        from safetensors.torch import load_file
        from sentence_transformers import SentenceTransformer

        with quiet_transformers():
            encoder = TextEncoder(SentenceTransformer(str(folder), device=map_location), max_length)
        state = load_file(str(Path(folder) / HEAD_FILE))
        model = cls(encoder, state["weight"].shape[0])
        model.head.load_state_dict(state)
        return model.to(map_location)


class TextClassifier(torch.nn.Module):
    """A text classifier with its tokenizer and labels: `predict` / `predict_proba` on raw texts
    or text pairs, `evaluate` on labelled data, `finetuner.save` / `finetuner.load`.

    Args:
        model: a `transformers` `*ForSequenceClassification` model, or a `PooledClassifier`,
            whose head has C outputs.
        tokenizer: its tokenizer.
        classes: the C labels in class-id order (ints or strings: what `predict` returns).
        multi_label: sigmoid per class (several labels per text) instead of softmax.
        threshold: multi-label probability cut-off, in (0, 1).
        max_length: truncate inputs to this many tokens (None: the model's maximum).
        strategy: how it was trained ("finetune", "setfit", "linear-probe"; see
            `finetuner.recipes.classification`), kept in the saved folder; None if unknown.

    Inputs (forward):
        the tokenizer's output: `input_ids`, `attention_mask` (and `token_type_ids` when the
        model uses them), int64 [B, L]. Returns the logits, float [B, C].
    """

    def __init__(self, model, tokenizer, classes: Sequence, *, multi_label: bool = False, threshold: float = 0.5,
                 max_length: int | None = None, strategy: str | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.classes, self.multi_label = list(classes), bool(multi_label)
        self.threshold, self.max_length, self.strategy = float(threshold), max_length, strategy

    @property
    def head(self) -> str:
        """"pooled" (a `PooledClassifier`) or "sequence-classification" (a transformers model)."""
        return "pooled" if isinstance(self.model, PooledClassifier) else "sequence-classification"

    @property
    def label_names(self) -> list[str]:
        """The C class names of the model config's `id2label`, in class-id order."""
        return [str(self.model.config.id2label[i]) for i in range(len(self.classes))]

    def forward(self, **inputs) -> torch.Tensor:
        """Logits, float [B, C], of tokenised inputs (int64 [B, L] tensors by name)."""
        return self.model(**inputs).logits

    def _run(self, data: Any, batch_size: int, width: int, forward: Callable, precision: str = "fp32") -> np.ndarray:
        """`forward(self, tokenised batch)` over every row of `data`, float32 numpy [N, width],
        in order; batches of similar length (less padding), no gradients, in `precision`
        ("fp32", or "bf16" / "fp16" autocast)."""
        rows = data if isinstance(data, TextRows) else to_text_rows(data, "texts", require_labels=False)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        lengths = [len(t) + (len(rows.pairs[i]) if rows.pairs else 0) for i, t in enumerate(rows.texts)]
        order = list(LengthGroupedBatchSampler(lengths, batch_size, shuffle=False))

        def batches():
            for idx in order:
                yield dict(self.tokenizer([rows.texts[i] for i in idx],
                                          [rows.pairs[i] for i in idx] if rows.pairs else None,
                                          truncation=True, max_length=self.max_length, padding=True,
                                          return_tensors="pt"))

        out = np.empty((len(rows), width), dtype=np.float32)
        for idx, values in zip(order, predict_batches(self, batches(), forward=forward, precision=precision)):
            out[idx] = values.float().cpu().numpy()
        return out

    def logits(self, data: Any, batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
        """Logits of every row of `data` (anything `to_text_rows` reads; labels are ignored), in
        order: float32 numpy [N, C]. `precision`: "fp32" (the model's weights as they are), or
        "bf16" / "fp16" autocast (what the training recipes use for their evaluations during a
        run: several times faster on a CPU with native bf16, at bf16 rounding of the logits).

        Raises:
            ValueError: a batch_size that is not an int >= 1, or unreadable texts.
        """
        return self._run(data, batch_size, len(self.classes), lambda m, b: m(**b), precision)

    def embed(self, data: Any, batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
        """The L2-normalised sentence embeddings the head of a "pooled" model reads, float32
        numpy [N, D], in the order of `data`; `precision` as in `logits`.

        Raises:
            TypeError: a "sequence-classification" model (its head reads the encoder's pooler).
        """
        if not isinstance(self.model, PooledClassifier):
            raise TypeError("embed: only a classifier with a pooled head (strategy 'setfit' or 'linear-probe') "
                            "has sentence embeddings under its head")
        return self._run(data, batch_size, self.model.encoder.embedding_dim, lambda m, b: m.model.embed(**b),
                         precision)

    def predict(self, texts: Any, batch_size: int = 64) -> Predictions:
        """Predicted labels and class probabilities.

        Args:
            texts: a string, a `(text_a, text_b)` pair, a list of either, or labelled data in
                any form `fit` takes (its labels are ignored).
            batch_size: texts per forward pass.

        Returns:
            `Predictions(labels, probabilities)`: N labels (lists for multi-label models) and
            float32 [N, C] probabilities, column i for `classes[i]`.

        Raises:
            ValueError: an empty input, a missing or empty text, half a pair.
        """
        logits = torch.from_numpy(self.logits(texts, batch_size))
        if self.multi_label:
            probs = torch.sigmoid(logits).numpy()
            labels = [[self.classes[j] for j in np.flatnonzero(p >= self.threshold)] for p in probs]
        else:
            probs = torch.softmax(logits, -1).numpy()
            labels = [self.classes[j] for j in probs.argmax(-1)]
        return Predictions(labels, probs)

    def predict_proba(self, texts: Any, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, float32 [N, C], column i for `classes[i]` (scikit-learn's
        `predict_proba`); see `predict`."""
        return self.predict(texts, batch_size).probabilities

    def evaluate(self, data: Any, batch_size: int = 64, compute_metrics: Callable | None = None) -> dict:
        """`eval_loss` (unweighted) and `classification_metrics` on labelled `data` (any form
        `fit` takes), plus `compute_metrics(EvalPrediction)` if given.

        Raises:
            ValueError: unlabelled data, or labels the model was not trained on.
        """
        rows = to_text_rows(data, "data")
        targets = encode_labels(rows.labels, self.classes, self.multi_label, "data")
        return classifier_eval_metrics(self.logits(rows, batch_size), targets, multi_label=self.multi_label,
                                       threshold=self.threshold, compute_metrics=compute_metrics)

    # ---- saving ------------------------------------------------------------------------
    def _finetuner_save(self, folder: str | os.PathLike) -> None:
        """Write the model's layout (see the module docstring), the tokenizer files and
        finetuner.json (classes, head, strategy, ...); `finetuner.save` makes it atomic."""
        folder = Path(folder)
        with quiet_transformers():  # no "Writing model shards" bar on every checkpoint
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        write_json(folder / META, {"format_version": FORMAT_VERSION, "framework": "torch", "kind": KIND,
                                   "classes": self.classes, "multi_label": self.multi_label,
                                   "threshold": self.threshold, "max_length": self.max_length,
                                   "head": self.head, "strategy": self.strategy})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str = "cpu") -> "TextClassifier":
        """Load a folder written by `finetuner.save` (or any local sequence-classification
        checkpoint with a tokenizer: its classes are then the ids 0..C-1).

        Raises:
            FileNotFoundError: no such folder. ValueError: the folder has no tokenizer.
        """
        from transformers import AutoModelForSequenceClassification

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"path: {str(path)!r} is not a folder")
        meta = read_meta(path) if (path / META).is_file() else {}
        if meta.get("head") == "pooled":
            model = PooledClassifier.from_pretrained(path, meta.get("max_length"), map_location)
            tokenizer = model.encoder.tokenizer
        else:
            tokenizer = load_tokenizer(str(path))
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(str(path))
            model.to(map_location)
        classes = meta.get("classes") or list(range(model.config.num_labels))
        return cls(model, tokenizer, classes, multi_label=meta.get("multi_label", False),
                   threshold=meta.get("threshold", 0.5), max_length=meta.get("max_length"),
                   strategy=meta.get("strategy")).eval()


def load_saved(path: Path, meta: dict, model, map_location: str) -> TextClassifier:
    """The loader of `finetuner.load` for folders whose finetuner.json says `KIND`.

    Raises:
        ValueError: a `model` was given (a saved classifier brings its own architecture).
    """
    if model is not None:
        raise ValueError("model: a saved text classifier loads its own architecture; call finetuner.load(path) "
                         "without model=")
    return TextClassifier.from_pretrained(path, map_location)


def load_tokenizer(spec: str):
    """AutoTokenizer for a local folder or hub id, refusing folders without tokenizer files
    (transformers 5 otherwise builds an empty 5-token tokenizer and training runs on garbage).

    Raises:
        ValueError: no tokenizer files in the folder, or the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    if Path(spec).is_dir() and not any((Path(spec) / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"model: the folder {spec!r} has no tokenizer (none of {TOKENIZER_FILES}); save the "
                         "tokenizer there (tokenizer.save_pretrained) or pass tokenizer=")
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # OSError, ValueError, ...: the message says which files were tried
        raise ValueError(f"model: could not load a tokenizer from {spec!r} ({type(e).__name__}: {e}); "
                         "pass tokenizer=") from e
