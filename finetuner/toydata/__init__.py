"""Real data sets as `LabeledData`, for demos, tests and benchmarks.

Each loader reads the original files from a caller's data folder (`data_dir=` or env
`FINETUNER_DATA`), else a download cache (env `FINETUNER_CACHE`, default `~/.cache/finetuner`),
else downloads them there (see `finetuner.toydata.files`). One module per data set.
"""

from finetuner.toydata.fashion import generate_fashion
from finetuner.toydata.glue import generate_mrpc, generate_sst2
from finetuner.toydata.instructions import generate_lima, generate_selfinstruct
from finetuner.toydata.qa import generate_qa
from finetuner.toydata.stsb import generate_stsb

__all__ = ["generate_fashion", "generate_lima", "generate_mrpc", "generate_qa", "generate_selfinstruct", "generate_sst2",
           "generate_stsb"]
