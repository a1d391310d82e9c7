"""A small real fit, run as a separate process by the engine tests (resume, multi-process).

usage: fit_small.py OUTPUT_DIR EPOCHS [--kill-at-epoch N] [--resume]
Writes OUTPUT_DIR/final-rank{R}.pt (the state dict) when training ends.
"""

import argparse
import os
import sys

import torch

import finetuner
from finetuner.engine.callbacks import Callback
from finetuner.toydata import generate_fashion


class KillMidEpoch(Callback):
    """Simulate a crash: exit hard in the middle of epoch `epoch` (1-based)."""

    def __init__(self, epoch: int):
        self.epoch, self.steps = epoch, 0

    def on_batch_end(self, trainer, loss):
        if trainer.state.epoch + 1 == self.epoch:
            self.steps += 1
            if self.steps == 3:
                os._exit(17)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("output_dir")
    p.add_argument("epochs", type=int)
    p.add_argument("--kill-at-epoch", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    callbacks = [KillMidEpoch(a.kill_at_epoch)] if a.kill_at_epoch else []
    result = finetuner.fit(model, generate_fashion(num_total=2000), eval_data=generate_fashion(num_total=500, is_testset=True),
                           epochs=a.epochs, batch_size=64, output_dir=a.output_dir, resume=a.resume,
                           callbacks=callbacks, verbose=False, device="cpu")
    rank = int(os.environ.get("RANK", 0))
    torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, os.path.join(a.output_dir, f"final-rank{rank}.pt"))
    torch.save(result.history, os.path.join(a.output_dir, f"history-rank{rank}.pt"))


if __name__ == "__main__":
    sys.exit(main())
