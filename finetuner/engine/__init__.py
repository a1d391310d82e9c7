"""The one training engine (on accelerate) every task runs on: its loop, callbacks, checkpoints
and multi-process data parallelism."""

from .callbacks import BestModelCheckpoint, Callback, CSVLogger, EarlyStopping, ProgressBar, TensorBoardLogger
from .checkpoint import Checkpoints
from .distributed import ShardedBatchSampler, gather_in_batch, mean_over
from .state import TrainState
from .trainer import Trainer, latest_checkpoint, make_accelerator

__all__ = ["BestModelCheckpoint", "CSVLogger", "Callback", "Checkpoints", "EarlyStopping", "ProgressBar",
           "ShardedBatchSampler", "TensorBoardLogger", "TrainState", "Trainer", "gather_in_batch",
           "latest_checkpoint", "make_accelerator", "mean_over"]
