"""The `finetuner` command line (typer): fit, demo, and the commands of each part."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Fine-tune a pretrained model on your own task, and see by how much.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

DEMOS = {
    # name -> module with run(data_dir, output_dir, epochs, quick) ; each part adds its own
    "fashion": "finetuner.demos.fashion",
    "tailor": "finetuner.demos.tailor",
    "mrpc": "finetuner.demos.mrpc",
    "llm": "finetuner.demos.llm",
    "covid-qa": "finetuner.demos.covid_qa",
    "stsb": "finetuner.demos.stsb",
    "sst2-tuner": "finetuner.demos.sst2_tuner",
    "arxiv-contrastive": "finetuner.demos.arxiv_contrastive",
}

from finetuner.cli.llm import app as _llm_app  # noqa: E402  (typer only; heavy imports stay in the commands)

app.add_typer(_llm_app, name="llm")

from finetuner.cli.label import label as _label_cmd  # noqa: E402  (typer only; the server loads on use)

app.command("label")(_label_cmd)


@app.command()
def demo(
    name: str = typer.Argument(..., help=f"one of: {', '.join(DEMOS)}"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the data sets (default: $FINETUNER_DATA, else download)"),
    output_dir: Path = typer.Option(Path("runs/demo"), help="where the model, metrics and logs go"),
    epochs: Optional[int] = typer.Option(None, help="override the demo's number of epochs"),
    quick: bool = typer.Option(False, help="a small, fast version (for smoke tests)"),
    quantize: str = typer.Option("none", help="llm demo only: none, 4bit (QLoRA, NF4) or 8bit"),
) -> None:
    """Run a demo end to end on real data and print the metrics before and after."""
    if name not in DEMOS:
        raise typer.BadParameter(f"unknown demo {name!r}; expected one of {sorted(DEMOS)}", param_hint="NAME")
    if quantize not in ("none", "4bit", "8bit") or (quantize != "none" and name != "llm"):
        raise typer.BadParameter(f"expected none, 4bit or 8bit, and only for the llm demo; got {quantize!r} "
                                 f"for {name!r}", param_hint="--quantize")
    extra = {"quantize": quantize} if quantize != "none" else {}
    module = importlib.import_module(DEMOS[name])
    module.run(data_dir=str(data_dir) if data_dir else None, output_dir=str(output_dir / name), epochs=epochs,
               quick=quick, **extra)


@app.command("fit")
def fit_cmd(
    model: str = typer.Argument(..., help="a saved finetuner model folder, or 'module:factory' returning a torch module"),
    train_data: str = typer.Option(..., "--train-data", help="CSV/JSONL file, or a toydata name such as 'fashion'"),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="CSV/JSONL file or toydata name (test split)"),
    output_dir: Path = typer.Option(Path("runs/fit"), help="model, metrics.json, logs and checkpoints go here"),
    task: Optional[str] = typer.Option(None, help="'classification' (MODEL is a model folder; a new head is added) "
                                       "or 'embedding'; default: inferred from the model"),
    loss: str = typer.Option("SiameseLoss", help="SiameseLoss, TripletLoss or InfoNCELoss (embedding)"),
    # None: the task's own default (embedding 10 / 256 / 1e-3, classification 3 / 8 / 5e-5)
    epochs: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None),
    learning_rate: Optional[float] = typer.Option(None),
    miner: Optional[str] = typer.Option(None, help="all, hard, semihard or easy"),
    precision: Optional[str] = typer.Option(None, help="fp32, bf16 or auto; default: the task's own"),
    device: str = typer.Option("auto"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toydata sets"),
    resume: bool = typer.Option(False, help="continue from the last checkpoint in output_dir"),
    seed: int = typer.Option(42),
) -> None:
    """Fine-tune a model; writes OUTPUT_DIR/model and OUTPUT_DIR/metrics.json."""
    import finetuner

    _started = time.time()
    given = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("learning_rate", learning_rate),
                               ("precision", precision)) if v is not None}
    if task == "classification" or (task is None and _is_classifier_folder(model)):
        # a text classifier starts from a model folder (or a saved classifier), not a torch module
        result = finetuner.fit(
            model, _load_data(train_data, data_dir, test=False),
            _load_data(eval_data, data_dir, test=True) if eval_data else None, task="classification", **given,
            device=device, output_dir=str(output_dir), resume=resume, seed=seed)
    else:
        result = finetuner.fit(
            _load_model(model), _load_data(train_data, data_dir, test=False),
            _load_data(eval_data, data_dir, test=True) if eval_data else None, **({"task": task} if task else {}),
            loss=loss, **({"epochs": 10, "batch_size": 256, "learning_rate": 1e-3} | given), miner=miner,
            device=device, output_dir=str(output_dir), resume=resume, seed=seed)
    typer.echo(f"model: {output_dir / 'model'}\nmetrics: {output_dir / 'metrics.json'}")
    if result.metrics_after:
        typer.echo(json.dumps({k: round(v, 4) for k, v in result.metrics_after.items()}))
    report_path = output_dir / "report.html"
    if report_path.is_file() and report_path.stat().st_mtime >= _started:  # this run's report, not an old one
        typer.echo(f"report: {report_path}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="the output_dir of a finished fit (holds metrics.json)"),
    num_queries: int = typer.Option(4, help="queries shown with their nearest neighbours"),
    k: int = typer.Option(5, help="neighbours shown per query"),
    projection: str = typer.Option("auto", help="2-D map: auto (UMAP when installed, else PCA), pca or umap"),
    seed: int = typer.Option(0, help="seed of the query choice and the map sample"),
) -> None:
    """Build RUN_DIR/report.html (metrics, curves, embedding map, neighbours) and print its path."""
    from finetuner.report import build_report

    try:
        path = build_report(run_dir, num_queries=num_queries, k=k, projection=projection, seed=seed)
    except (FileNotFoundError, ValueError, ImportError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(str(path))


def _is_classifier_folder(spec: str) -> bool:
    """A saved text classifier or a transformers sequence-classification folder."""
    from finetuner.recipes.classification import looks_like_classification

    return Path(spec).is_dir() and looks_like_classification(spec, {})


def _load_model(spec: str):
    import finetuner

    if Path(spec).is_dir():
        return finetuner.load(spec).train()
    if ":" in spec:
        module, attr = spec.split(":", 1)
        return getattr(importlib.import_module(module), attr)()
    raise typer.BadParameter(f"expected a saved model folder or 'module:factory', got {spec!r}", param_hint="MODEL")


def _load_data(spec: str, data_dir: Optional[Path], test: bool):
    from finetuner import toydata

    loader = getattr(toydata, f"generate_{spec.replace('-', '_')}", None)
    if loader is not None and not Path(spec).exists():
        return loader(is_testset=test, data_dir=str(data_dir) if data_dir else None)
    return spec  # a file path: fit reads CSV / JSONL itself


def main() -> None:  # pragma: no cover
    """Run the command line."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
