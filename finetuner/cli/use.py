"""`finetuner evaluate`, `finetuner embed` and `finetuner export`: a tuned (or any) model used
from the shell: its metrics on data, its embeddings as a .npy file, its ONNX export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .errors import fail, split_csv
from .loading import data_for, model_for_use

MODEL_HELP = ("a folder saved by finetuner, a Hugging Face / sentence-transformers model folder or id, or "
              "'module:factory' returning a torch module")
TRUST_HELP = "load a pickled module from a saved folder (runs code named in the file: only for folders you trust)"


def _is_classifier(model) -> bool:
    return type(model).__name__ == "TextClassifier"


def evaluate_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = typer.Option(..., "--data", help="labelled CSV / TSV / JSON / JSONL / parquet file, a BEIR folder "
                             "(its test split) or a toydata name (its test split)"),
    k: Optional[List[str]] = typer.Option(None, "--k", help="cut-offs of the ranking metrics, e.g. --k 1,10 "
                                          "[default: 10]"),
    distance: str = typer.Option("cosine", help="cosine, euclidean or sqeuclidean (embedding models)"),
    batch_size: int = typer.Option(256, help="items per forward pass"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the metrics to this JSON file"),
    as_json: bool = typer.Option(False, "--json", help="print only the metrics, as JSON"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toydata sets (default: $FINETUNER_DATA)"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_HELP),
) -> None:
    """Score MODEL on --data: a table of metrics (and JSON with --json / --out).

    Ranking metrics for an embedding model (each item a query against the others, or the
    queries of a BEIR folder against its corpus); accuracy / F1 for a classifier.
    """
    import finetuner

    try:
        ks = tuple(int(x) for x in split_csv(k)) or (10,)
    except ValueError:
        fail(f"expected whole numbers such as 1,10, got {k}", "--k")
    items = data_for(data, data_dir, test=True, hint="--data")  # a bad --data fails before a model loads
    loaded = model_for_use(model, trust_pickle)
    if _is_classifier(loaded):
        metrics = loaded.evaluate(items, batch_size=batch_size)
    else:
        metrics = finetuner.evaluate(loaded, items, ks=ks, distance=distance, batch_size=batch_size)
    metrics = {key: (value.item() if hasattr(value, "item") else value) for key, value in metrics.items()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2))
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{Path(model).name or model} on {Path(data).name or data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if out is not None:
        typer.echo(f"metrics: {out}")


def embed_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = typer.Option(..., "--data", help="items: a .txt (one text per line), .csv / .tsv / .jsonl / .json "
                             "(its text column), .npy array, or a toydata name (fashion, covid-qa)"),
    out: Path = typer.Option(Path("embeddings.npy"), "--out", help="the float32 [N, D] array is written here"),
    batch_size: int = typer.Option(256, help="items per forward pass"),
    num_items: Optional[int] = typer.Option(None, help="embed only the first N items"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toydata sets (default: $FINETUNER_DATA)"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_HELP),
) -> None:
    """Embed the items of --data with MODEL into --out (.npy, float32 [N, D], in data order)."""
    import numpy as np

    import finetuner

    from .label import load_items

    if out.suffix != ".npy":
        fail(f"expected a .npy file name, got {str(out)!r}", "--out")
    items = load_items(data, str(data_dir) if data_dir else None, num_items)
    loaded = model_for_use(model, trust_pickle)
    if _is_classifier(loaded):
        fail(f"{model!r} is a text classifier: it gives labels, not embeddings; use `finetuner evaluate`, or "
             "embed with the encoder it was tuned from", "MODEL")
    embeddings = finetuner.embed(loaded, items, batch_size=batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, embeddings.astype(np.float32, copy=False))
    typer.echo(f"embeddings: {out} ({embeddings.shape[0]} x {embeddings.shape[1]}, float32)")


def export_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out: Path = typer.Argument(..., help="the folder to write: the saved model plus onnx/model.onnx"),
    format: str = typer.Option("onnx", "--format", help="onnx"),
    quantize: str = typer.Option("none", help="none, or int8 (also writes onnx/model_qint8.onnx)"),
    opset: int = typer.Option(17, help="ONNX opset version (14 to 20)"),
    data: Optional[str] = typer.Option(None, "--data", help="example items to trace with (a .npy array for a "
                                       "torch module: required there; texts for text models: optional)"),
    overwrite: bool = typer.Option(False, help="replace OUT even if it holds something other than a model"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toydata sets (default: $FINETUNER_DATA)"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_HELP),
) -> None:
    """Export MODEL to ONNX in OUT (checked against torch with onnxruntime; optional int8)."""
    import numpy as np

    from finetuner.models.export import export

    from .label import load_items

    if quantize not in ("none", "int8"):
        fail(f"expected none or int8, got {quantize!r}", "--quantize")
    example = None
    if data is not None:
        items = load_items(data, str(data_dir) if data_dir else None, 4)
        example = list(items) if isinstance(items, list) else np.asarray(items)
    loaded = model_for_use(model, trust_pickle)
    path = export(loaded, out, format, quantize=None if quantize == "none" else quantize, example=example,
                  opset=opset, overwrite=overwrite)
    info = json.loads((path.parent / "export.json").read_text())
    typer.echo(f"onnx: {path}\ninputs: {', '.join(info['inputs'])}; outputs: {', '.join(info['outputs'])}; "
               f"max |onnx - torch| = {info['max_abs_diff']:.1e}")
