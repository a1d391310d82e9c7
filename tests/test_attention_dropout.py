"""Training without attention-probability dropout (`set_attention_dropout`): the switch takes that
dropout, and only that one, out of training; the model's maths is otherwise unchanged (outputs and
gradients equal those of the eval-mode model), the saved config does not record it, and the
recipes hand the model back with the attention it came with."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from finetuner.models.dropout import ATTENTION, set_attention_dropout  # noqa: E402


def tiny(attention: float = 0.5, hidden: float = 0.0):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=hidden,
                                     attention_probs_dropout_prob=attention, attn_implementation="sdpa")
    return transformers.BertModel(config)


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded row: the mask must still apply
    return {"input_ids": ids, "attention_mask": mask}


def test_switching_off_leaves_the_eval_maths_in_training():
    model, batch = tiny(), inputs()
    model.eval()
    reference = model(**batch).last_hidden_state
    model.train()
    assert not torch.allclose(model(**batch).last_hidden_state, reference, atol=1e-4)  # p = 0.5 drops
    assert set_attention_dropout(model, keep=False) == 1
    assert model.config._attn_implementation == ATTENTION
    out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    assert set_attention_dropout(model, keep=True) == 1  # and back
    assert model.config._attn_implementation == "sdpa"
    assert not torch.allclose(model(**batch).last_hidden_state, reference, atol=1e-4)


def test_gradients_equal_those_of_eager_attention_without_dropout():
    switched, batch = tiny(), inputs()
    eager = tiny(attention=0.0)
    eager.set_attn_implementation("eager")
    eager.load_state_dict(switched.state_dict())
    set_attention_dropout(switched.train(), keep=False)
    for model in (switched, eager.train()):
        (model(**batch).last_hidden_state * torch.linspace(-1, 1, 32)).sum().backward()
    for (name, a), (_, b) in zip(switched.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_hidden_dropout_stays():
    model, batch = tiny(attention=0.5, hidden=0.5), inputs()
    set_attention_dropout(model.train(), keep=False)
    assert not torch.allclose(model(**batch).last_hidden_state, model(**batch).last_hidden_state)


def test_other_attention_implementations_are_left_alone():
    model = tiny()
    model.set_attn_implementation("eager")
    assert set_attention_dropout(model, keep=False) == 0
    assert model.config._attn_implementation == "eager"
    assert set_attention_dropout(torch.nn.Linear(2, 2), keep=False) == 0


def test_the_saved_config_does_not_record_the_switch(tmp_path):
    model = tiny()
    set_attention_dropout(model, keep=False)
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["attention_probs_dropout_prob"] == 0.5


def test_fit_trains_without_it_and_returns_the_model_as_it_came(tiny_bert):
    import finetuner

    pairs = [(f"question {i} about topic {i % 5}", f"answer {i} on topic {i % 5} with more words") for i in range(16)]
    result = finetuner.fit(tiny_bert, pairs, epochs=1, batch_size=16, verbose=False, report=False)
    assert result.settings["attention_dropout"] is False
    assert result.model.sentence_transformer[0].auto_model.config._attn_implementation == "sdpa"
    kept = finetuner.fit(tiny_bert, pairs, epochs=1, batch_size=16, verbose=False, report=False,
                         attention_dropout=True)
    assert kept.settings["attention_dropout"] is True


@pytest.mark.parametrize("task", [None, "classification"])
def test_a_non_bool_setting_is_refused_before_training(tiny_bert, task):
    import finetuner

    rows = [("a text", 0), ("another text", 1)] * 4 if task else [("a", "b"), ("c", "d")]
    expected = 'True, False or "auto"' if task else "True or False"
    with pytest.raises(ValueError, match=f"attention_dropout: expected {expected}, got 'no'"):
        finetuner.fit(tiny_bert, rows, task=task, attention_dropout="no", verbose=False, report=False)


def test_the_classifier_leaves_it_out_for_long_rows_only(tiny_bert):
    import finetuner
    from finetuner.recipes.classification import LONG_ROW_TOKENS

    short = [(f"text {i}", i % 2) for i in range(16)]
    long = [(" ".join(["word"] * LONG_ROW_TOKENS) + f" {i}", i % 2) for i in range(16)]
    kw = dict(task="classification", strategy="finetune", epochs=1, verbose=False, report=False)
    assert finetuner.fit(tiny_bert, short, **kw).settings["attention_dropout"] is True
    assert finetuner.fit(tiny_bert, long, **kw).settings["attention_dropout"] is False
    assert finetuner.fit(tiny_bert, long, attention_dropout=True, **kw).settings["attention_dropout"] is True
