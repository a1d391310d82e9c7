"""`python -m finetuner ...`: the command line."""

from .cli import app

app(prog_name="finetuner")
