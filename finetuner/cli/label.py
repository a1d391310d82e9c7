"""`finetuner label --model ... --data ...`: the Labeler from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

TEXT_COLUMNS = ("text", "question", "sentence", "item", "content", "query")


def load_items(spec: str, data_dir: Optional[str] = None, num_items: Optional[int] = None) -> Any:
    """Unlabelled items from a toydata name or a file.

    Args:
        spec: "fashion" (Fashion-MNIST training images, numpy [N, 28, 28]), "covid-qa" (the
            Covid-QA training questions and answers, strings), or a file: .npy (an array [N, ...]),
            .txt (one text per line, blank lines skipped), .csv / .tsv / .jsonl / .json (the
            first of the columns `TEXT_COLUMNS`, else the only column).
        data_dir: folder of the toydata sets.
        num_items: keep the first `num_items` items.

    Raises:
        typer.BadParameter: an unknown name, a missing file, or a table without a text column.
    """
    path = Path(spec)
    if spec == "fashion" and not path.exists():
        from finetuner.toydata import generate_fashion

        items = generate_fashion(num_items or 60000, data_dir=data_dir).items
    elif spec in ("covid-qa", "qa") and not path.exists():
        from finetuner.toydata import generate_qa

        items = list(generate_qa(data_dir=data_dir, format="class").items)
    elif not path.is_file():
        raise typer.BadParameter(f"expected 'fashion', 'covid-qa' or a .npy/.txt/.csv/.tsv/.jsonl/.json file, "
                                 f"got {spec!r}", param_hint="--data")
    elif path.suffix == ".npy":
        import numpy as np

        items = np.load(path, allow_pickle=False)
    elif path.suffix == ".txt":
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix in (".csv", ".tsv", ".jsonl", ".json", ".parquet"):
        from finetuner.data.readers import read_table

        frame = read_table(path, "--data")  # a malformed line is named by file and line number
        column = next((c for c in TEXT_COLUMNS if c in frame.columns), None)
        if column is None and len(frame.columns) == 1:
            column = frame.columns[0]
        if column is None:
            raise typer.BadParameter(f"{path.name}: expected a column named one of {TEXT_COLUMNS} (or a single "
                                     f"column), got {list(frame.columns)}", param_hint="--data")
        items = [str(x) for x in frame[column].dropna()]
    else:
        raise typer.BadParameter(f"{path.name}: expected a .npy, .txt, .csv, .tsv, .jsonl or .json file",
                                 param_hint="--data")
    return items[:num_items] if num_items else items


def load_model(spec: str, trust_pickle: bool = False) -> Any:
    """A model from a folder saved by `finetuner.save`, a sentence-transformers / Hugging Face
    folder or hub id (a text model), or "module:factory" (a function returning a torch module)."""
    from .loading import build_factory, is_factory, is_saved, load_saved

    path = Path(spec)
    if is_saved(spec):
        return load_saved(path, trust_pickle).train()
    if is_factory(spec):
        return build_factory(spec, "--model")
    if path.is_dir():
        from finetuner.models.text import TextEncoder

        return TextEncoder.from_pretrained(spec)
    raise typer.BadParameter(f"expected a model folder or 'module:factory', got {spec!r}", param_hint="--model")


def label(
    model: str = typer.Option(..., "--model", help="a saved finetuner model folder, a sentence-transformers "
                              "folder (text), or 'module:factory' returning a torch module"),
    data: str = typer.Option(..., "--data", help="'fashion', 'covid-qa', or a .npy / .txt / .csv / .jsonl file of items"),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="labelled data scored after each round: "
                                            "'fashion' / 'covid-qa' (test split) or a CSV/JSONL file"),
    output_dir: Path = typer.Option(Path("runs/label"), help="labels.sqlite, checkpoint/ and model/ go here"),
    host: str = typer.Option("127.0.0.1", help="interface to bind; anything but loopback warns"),
    port: int = typer.Option(0, help="TCP port (0: any free one)"),
    open_browser: bool = typer.Option(True, "--open-browser/--no-browser", help="open the page in a browser"),
    top_k: int = typer.Option(8, help="results shown per query"),
    strategy: str = typer.Option("margin", help="margin, entropy, disagreement, random or sequential"),
    num_items: Optional[int] = typer.Option(None, help="label only the first N items"),
    loss: Optional[str] = typer.Option(None, help="SiameseLoss, TripletLoss or InfoNCELoss (default: the recipe's)"),
    epochs: Optional[int] = typer.Option(None, help="epochs per tuning round"),
    batch_size: Optional[int] = typer.Option(None), learning_rate: Optional[float] = typer.Option(None),
    device: str = typer.Option("auto"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toydata sets (default $FINETUNER_DATA)"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="load a pickled module from a saved folder "
                                      "(runs code named in the file: only for folders you trust)"),
) -> None:
    """Label search results in a local web page while the model tunes in the background."""
    import finetuner

    dd = str(data_dir) if data_dir else None
    model_obj = load_model(model, trust_pickle)
    items = load_items(data, dd, num_items)
    evald = None
    if eval_data:
        from finetuner import toydata

        loader = {"fashion": toydata.generate_fashion, "covid-qa": toydata.generate_qa}.get(eval_data)
        evald = (loader(is_testset=True, data_dir=dd, **({"format": "class"} if eval_data == "covid-qa" else {}))
                 if loader and not Path(eval_data).exists() else eval_data)
    given = {k: v for k, v in (("loss", loss), ("epochs", epochs), ("batch_size", batch_size),
                               ("learning_rate", learning_rate)) if v is not None}
    result = finetuner.fit(model_obj, items, evald, interactive=True, host=host, port=port,
                           open_browser=open_browser, top_k=top_k, strategy=strategy, device=device,
                           output_dir=str(output_dir), **given)
    s = result.settings
    typer.echo(f"model v{s['model_version']} ({s['num_labels']} labels on {s['num_sessions']} queries): {s['model_path']}")
    if result.metrics_after:
        typer.echo(json.dumps({k: round(v, 4) for k, v in result.metrics_after.items() if isinstance(v, float)}))
