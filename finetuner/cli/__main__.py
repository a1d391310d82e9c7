"""`python -m finetuner.cli ...`: the command line."""

from . import app

app(prog_name="finetuner")
