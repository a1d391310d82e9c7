"""Real data sets as `LabeledData`, for demos, tests and benchmarks.

Each loader reads the original files from a caller's data folder (`data_dir=` or env
`FINETUNER_DATA`), else a download cache (env `FINETUNER_CACHE`, default `~/.cache/finetuner`),
else downloads them there (see `finetuner.toydata._files`). One module per data set.
"""

from finetuner.toydata.fashion import generate_fashion

__all__ = ["generate_fashion"]
