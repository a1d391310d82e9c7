"""`python -m finetuner.cli ...`: the command line."""

from . import main

main()
