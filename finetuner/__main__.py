"""`python -m finetuner ...`: the command line."""

from .cli import main

main()
