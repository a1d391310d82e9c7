"""The main job: the seed's 784-128-32 MLP tuned on real Fashion-MNIST (60k train, 10k test)."""

from __future__ import annotations

import torch


def mlp() -> torch.nn.Module:
    """The seed's embedding model: flatten a 28x28 image, 784 -> 128 -> ReLU -> 32."""
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(28 * 28, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 32))


def run(data_dir: str | None = None, output_dir: str = "runs/demo/fashion", epochs: int | None = None,
        quick: bool = False):
    """Fit the MLP with fit's defaults; print metrics before/after; save the model to output_dir.

    quick: 6000 train / 2000 test items and 2 epochs (a smoke test).
    """
    import finetuner
    from finetuner.toydata import generate_fashion

    torch.manual_seed(0)
    train = generate_fashion(num_total=6000 if quick else 60000, data_dir=data_dir)
    test = generate_fashion(num_total=2000 if quick else 10000, is_testset=True, data_dir=data_dir)
    kwargs = {"epochs": epochs or (2 if quick else 10)}
    result = finetuner.fit(mlp(), train, eval_data=test, output_dir=output_dir, **kwargs)
    print(f"saved to {output_dir}/model; metrics in {output_dir}/metrics.json")
    return result
