"""`finetuner fit MODEL --train-data ... [--config run.yaml]`: `finetuner.fit` from the shell.

Every keyword of `fit` can be set in a YAML or JSON config file whose keys are `fit`'s own
names (`model`, `train_data`, `eval_data`, `task`, `epochs`, `loss`, `pooling`, `num_labels`,
...); the command's flags override the file, and `--set KEY=VALUE` sets any other keyword
(VALUE read as YAML: `--set early_stopping=2 --set ks=[1,10]`). Unknown keys are an error that
names them, before any model or data is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from .errors import fail
from .loading import data_for, model_for_fit

FIT_KEYS = ("model", "train_data", "eval_data", "task", "interactive", "cache_prefix")  # `fit`'s own, not a recipe's


def read_config(path: Path) -> dict:
    """The settings in a YAML (.yaml / .yml) or JSON (.json) file: a mapping of `fit`'s names.

    Raises:
        ValueError: a missing file, another suffix, a file that does not parse (names the line),
            or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: {str(path)!r} does not exist; expected a .yaml, .yml or .json file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: {path}, line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"--config: {path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from e
    else:
        raise ValueError(f"--config: expected a .yaml, .yml or .json file, got {path.name!r}")
    if config is None:
        return {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"--config: {path} must hold a mapping of fit's argument names to values, got "
                         f"{type(config).__name__}")
    return config


def parse_sets(values: Optional[List[str]]) -> dict:
    """--set KEY=VALUE pairs, each VALUE read as YAML (numbers, true/false, lists, mappings)."""
    import yaml

    out = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"expected KEY=VALUE (a fit argument and its value), got {item!r}", "--set")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def check_keys(settings: dict, model: Any, task: Optional[str], where: str) -> None:
    """Raise when `settings` names an argument the chosen recipe of `fit` does not take.

    Raises:
        ValueError: the unknown keys, where they came from, and the known ones.
    """
    from finetuner.api import choose_recipe
    from finetuner.models.tailor import TAILOR_ARGS
    from finetuner.recipes.run import recipe_arguments

    name, recipe = choose_recipe(model, task, settings)
    known = recipe_arguments(recipe) | set(FIT_KEYS) | set(TAILOR_ARGS)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{where}: unknown fit argument(s) {unknown} for the {name} recipe; known: {sorted(known)}")


def fit_cmd(
    model: Optional[str] = typer.Argument(None, help="a Hugging Face model folder or id (text embedding, or a "
                                          "classifier with --task classification / num_labels), a folder saved by "
                                          "finetuner, or 'module:factory' returning a torch module; or `model` in "
                                          "--config"),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="CSV / TSV / JSON / JSONL / parquet file, "
                                             "a BEIR folder, or a toydata name (fashion, mrpc, sst2, qa, stsb)"),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="as --train-data (a toydata name: its test "
                                            "split); metrics before and after training"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML or JSON file of fit's arguments by name; "
                                          "flags override it"),
    task: Optional[str] = typer.Option(None, help="embedding, text or classification (default: from the model)"),
    output_dir: Optional[Path] = typer.Option(None, help="model/, metrics.json, logs and checkpoints go here "
                                              "[default: runs/fit]"),
    loss: Optional[str] = typer.Option(None, help="SiameseLoss, TripletLoss, InfoNCELoss, ... (default: the "
                                       "recipe's)"),
    epochs: Optional[int] = typer.Option(None, help="passes over the training data (default: the recipe's)"),
    batch_size: Optional[int] = typer.Option(None), learning_rate: Optional[float] = typer.Option(None),
    miner: Optional[str] = typer.Option(None, help="all, hard, semihard or easy"),
    precision: Optional[str] = typer.Option(None, help="fp32, bf16, fp16 or auto (default: the recipe's)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, ... [default: auto]"),
    seed: Optional[int] = typer.Option(None),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="continue from the last checkpoint "
                                          "in output_dir"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE for any other fit argument "
                                             "(repeatable; VALUE read as YAML)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toydata sets (default: $FINETUNER_DATA)"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="load a pickled module from a saved folder "
                                      "(runs code named in the file: only for folders you trust)"),
) -> None:
    """Fine-tune MODEL on --train-data; writes OUTPUT_DIR/model (with a model card) and metrics.json.

    Embedding runs with eval data also write OUTPUT_DIR/report.html. Every fit argument can
    come from --config (YAML / JSON, keys are fit's names); flags override it.
    """
    import finetuner

    settings = read_config(config) if config else {}
    flags = {"task": task, "output_dir": str(output_dir) if output_dir else None, "loss": loss, "epochs": epochs,
             "batch_size": batch_size, "learning_rate": learning_rate, "miner": miner, "precision": precision,
             "device": device, "seed": seed, "resume": resume}
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings.update(parse_sets(set_))
    model_spec = model if model is not None else settings.pop("model", None)
    settings.pop("model", None)
    train_spec = train_data if train_data is not None else settings.pop("train_data", None)
    eval_spec = eval_data if eval_data is not None else settings.pop("eval_data", None)
    settings.pop("train_data", None), settings.pop("eval_data", None)
    if model_spec is None:
        fail("missing: give MODEL on the command line or `model` in --config", "MODEL")
    if train_spec is None:
        fail("missing: give --train-data or `train_data` in --config", "--train-data")
    settings.setdefault("output_dir", "runs/fit")
    model_obj = model_for_fit(str(model_spec), trust_pickle)
    check_keys(settings, model_obj, settings.get("task"), f"--config {config}" if config else "fit")
    train = data_for(str(train_spec), data_dir, test=False, hint="--train-data")
    evald = data_for(str(eval_spec), data_dir, test=True, hint="--eval-data") if eval_spec is not None else None
    result = finetuner.fit(model_obj, train, evald, **settings)
    out = Path(result.output_dir or settings["output_dir"])
    if (out / "model" / "README.md").is_file():  # the card names the data sets, which only the command knows
        from finetuner.models.card import write_card

        write_card(out / "model", result.model, result, datasets=[Path(str(s)).name for s in (train_spec, eval_spec)
                                                                  if s is not None])
    typer.echo(f"model: {out / 'model'}\nmetrics: {out / 'metrics.json'}")
    if result.metrics_after:
        typer.echo(json.dumps({k: round(v, 4) for k, v in result.metrics_after.items() if isinstance(v, float)}))
