"""STS-B: all-MiniLM-L6-v2 tuned on scored sentence pairs with CoSENT.

    finetuner demo stsb [--quick] [--epochs N] [--data-dir DIR]

Trains on the STS-B train split (5749 pairs, gold similarity 0-5 rescaled to [0, 1]) with
`CoSENTLoss` (the default loss for scored pairs) and reports the Spearman correlation between
the cosine similarity of each pair's embeddings and its gold score on the test split (1379
pairs), before and after: the standard STS-B evaluation (Cer et al., 2017).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def run(data_dir: str | None = None, output_dir: str = "runs/demo/stsb", epochs: int | None = None,
        quick: bool = False) -> dict:
    """Fine-tune all-MiniLM-L6-v2 on STS-B train and print test Spearman before and after.

    quick: 256 training pairs, 300 test pairs, 1 epoch (a smoke test).

    Returns:
        {"before": spearman, "after": spearman, "fit": FitResult}; also writes
        output_dir/stsb_metrics.json and the model (output_dir/model, sentence-transformers layout).
    """
    import finetuner
    from finetuner.demos.covid_qa import model_path
    from finetuner.toydata import generate_stsb

    train = generate_stsb(256 if quick else None, data_dir=data_dir)
    test = generate_stsb(300 if quick else None, is_testset=True, data_dir=data_dir)
    result = finetuner.fit(model_path(), train, eval_data=test, epochs=epochs or (1 if quick else 2),
                           batch_size=32, learning_rate=2e-5, output_dir=output_dir)
    before, after = result.metrics_before["spearman_cosine"], result.metrics_after["spearman_cosine"]
    print(f"\nSTS-B test ({len(test) // 2} pairs): Spearman of cosine similarity vs gold score")
    print(f"before {before:.4f}   after {after:.4f}   change {after - before:+.4f}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "stsb_metrics.json.tmp"
    tmp.write_text(json.dumps({"before": before, "after": after, "train_pairs": len(train) // 2,
                               "test_pairs": len(test) // 2, "settings": result.settings}, indent=2, default=str))
    os.replace(tmp, out / "stsb_metrics.json")
    return {"before": before, "after": after, "fit": result}
