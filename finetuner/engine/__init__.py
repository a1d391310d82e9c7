"""The one training engine (on accelerate) every task runs on, and its callbacks."""

from .callbacks import BestModelCheckpoint, Callback, CSVLogger, EarlyStopping, ProgressBar, TensorBoardLogger
from .state import TrainState
from .trainer import Trainer, latest_checkpoint, make_accelerator

__all__ = ["BestModelCheckpoint", "CSVLogger", "Callback", "EarlyStopping", "ProgressBar", "TensorBoardLogger",
           "TrainState", "Trainer", "latest_checkpoint", "make_accelerator"]
