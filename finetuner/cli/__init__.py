"""The `finetuner` command line (typer): fit, evaluate, embed, export, report, label, demo and
`llm ...`. A problem the user can fix prints one line, `error: ...`, and exits with code 2
(`finetuner.cli.errors`); `--debug` shows the traceback."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import typer

from .errors import CleanApp

app = CleanApp(help="Fine-tune a pretrained model on your own task, and see by how much.",
               no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error (also "
                                         "FINETUNER_DEBUG=1; allowed anywhere on the line)")) -> None:
    """Fine-tune a pretrained model on your own task, and see by how much."""


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
from finetuner.cli.fit import fit_cmd as _fit_cmd  # noqa: E402
from finetuner.cli.use import embed_cmd as _embed_cmd, evaluate_cmd as _evaluate_cmd, export_cmd as _export_cmd  # noqa: E402

app.command("fit")(_fit_cmd)
app.command("evaluate")(_evaluate_cmd)
app.command("embed")(_embed_cmd)
app.command("export")(_export_cmd)
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

    typer.echo(str(build_report(run_dir, num_queries=num_queries, k=k, projection=projection, seed=seed)))


def main() -> None:  # pragma: no cover
    """Run the command line (`finetuner ...`, `python -m finetuner ...`)."""
    app(prog_name="finetuner")


if __name__ == "__main__":  # pragma: no cover
    main()
