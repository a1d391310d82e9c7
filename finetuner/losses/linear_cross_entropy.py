"""Cross-entropy through the output projection, in chunks: the summed next-token NLL of hidden
states under a vocabulary matrix, without a [tokens, vocab] tensor for all tokens at once.

For a small LM the vocabulary is the largest tensor of a step: SmolLM2's 49152 logits per token
in float32 are 197 KB a token, so 2,000 labelled tokens hold 0.4 GB of logits, as much again for
the log-softmax and for its gradient. Here the logits of `chunk` tokens exist at a time; the
gradient with respect to the hidden states is computed during the forward pass (softmax minus the
one-hot target, times the projection) and kept ([tokens, hidden], small), so the backward pass
only scales it. The method of Liger Kernel's fused linear cross-entropy (Hsu et al. 2024,
"Liger Kernel: Efficient Triton Kernels for LLM Training") and of Wijmans et al. 2024 ("Cut
Your Losses in Large-Vocabulary Language Models"), on the CPU in plain torch.
"""

from __future__ import annotations

import torch

MAX_CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MB in float32


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The matmul dtype an `nn.Linear` would use here: the autocast dtype inside autocast."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, grad_enabled):  # noqa: D102 (see linear_cross_entropy)
        dtype = _compute_dtype(hidden)
        h, w = hidden.to(dtype), weight.to(dtype)
        need_h, need_w = (grad_enabled and ctx.needs_input_grad[0]), (grad_enabled and ctx.needs_input_grad[1])
        float_dtype = torch.promote_types(dtype, torch.float32)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=float_dtype, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=float_dtype, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, h.shape[0], chunk):
                hc, yc = h[start:start + chunk], targets[start:start + chunk]
                logits = (hc @ w.T).to(float_dtype)  # [c, vocab]
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
                if need_h or need_w:
                    probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                    probs[torch.arange(len(yc), device=yc.device), yc] -= 1.0  # d loss / d logits
                    probs = probs.to(dtype)
                    if need_h:
                        grad_h[start:start + chunk] = probs @ w
                    if need_w:
                        grad_w += (probs.T @ hc).to(grad_w.dtype)
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):  # noqa: D102
        grad_h, grad_w = ctx.saved_tensors
        if grad_h is not None:
            grad_h = (grad_h * grad_total).to(ctx.dtypes[0])
        if grad_w is not None:
            grad_w = (grad_w * grad_total).to(ctx.dtypes[1])
        return grad_h, grad_w, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int | None = None) -> torch.Tensor:
    """Sum over tokens of -log softmax(hidden @ weight.T)[target], in chunks of tokens.

    Equal to `F.cross_entropy(hidden @ weight.T, targets, reduction="sum")` (the logits in the
    autocast dtype inside autocast, as `nn.Linear` computes them; log-softmax in float32), with
    peak memory of one chunk of logits instead of all of them.

    Args:
        hidden: [N, d] float hidden states at the predicting positions (after the final norm).
        weight: [V, d] the output projection (an `nn.Linear`'s weight, no bias).
        targets: [N] int64 token ids in [0, V) (no ignored positions: select them first).
        chunk: tokens per chunk; default so that a chunk holds at most 2^24 logits.

    Returns:
        A float32 (float64 for float64 inputs) scalar tensor (nats), differentiable in `hidden` and `weight`.

    Raises:
        ValueError: shapes that do not match.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden, weight: expected [N, d] and [V, d], got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets: expected shape [{hidden.shape[0]}], got {tuple(targets.shape)}")
    chunk = chunk or max(16, MAX_CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, targets, int(chunk), torch.is_grad_enabled())
