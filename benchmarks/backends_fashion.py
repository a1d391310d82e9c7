"""Fashion-MNIST acceptance for Keras and Paddle models: the seed's examples, default `fit`.

The seed's MLP (Flatten, 784-128 ReLU, 128-32) built in the framework, trained by
`finetuner.fit(embed_model, train_data=generate_fashion(), eval_data=generate_fashion(is_testset=True))`
with every default (SiameseLoss, cosine, margin 0.5, 10 epochs, batch 256, Adam 1e-3 cosine
schedule). Prints mAP@10 / precision@10 / nDCG@10 on the 10k test items before and after, and
the time per epoch. One framework per process (Paddle crashes if imported after TensorFlow).

    python benchmarks/backends_fashion.py --framework keras [--epochs 10] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import time


def seed_model(framework: str):
    """The seed's embedding model in `framework`, initialised from seed 0."""
    if framework == "keras":
        import tensorflow as tf

        tf.keras.utils.set_random_seed(0)
        return tf.keras.Sequential([tf.keras.layers.Input((28, 28)), tf.keras.layers.Flatten(),
                                    tf.keras.layers.Dense(128, activation="relu"), tf.keras.layers.Dense(32)])
    if framework == "paddle":
        import paddle

        paddle.seed(0)
        return paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(784, 128), paddle.nn.ReLU(),
                                    paddle.nn.Linear(128, 32))
    raise ValueError(f"--framework: expected 'keras' or 'paddle', got {framework!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", required=True, choices=["keras", "paddle"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    model = seed_model(args.framework)

    import finetuner
    from finetuner.toydata import generate_fashion

    train = generate_fashion(data_dir=args.data_dir)
    test = generate_fashion(is_testset=True, data_dir=args.data_dir)
    start = time.perf_counter()
    r = finetuner.fit(model, train_data=train, eval_data=test, epochs=args.epochs, verbose=False)
    total = time.perf_counter() - start
    keys = ("mAP@10", "precision@10", "nDCG@10")
    out = {"framework": args.framework, "epochs": args.epochs, "total_s": round(total, 1),
           "epoch_s": round(sum(h["epoch_time_s"] for h in r.history) / args.epochs, 2),
           "before": {k: round(r.metrics_before[k], 3) for k in keys},
           "after": {k: round(r.metrics_after[k], 3) for k in keys},
           "model": type(r.model).__module__ + "." + type(r.model).__name__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
