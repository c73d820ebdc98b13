"""The language-model loss a chunk of positions at a time (`--chunked-loss`), gradients included.

Where it sits: `GPT.forward(idx, targets)` with `model.chunked_loss = True` calls
`chunked_lm_loss` in place of `lm_head` + `F.cross_entropy` (minigpt/model.py).

## Why chunk

The logits are the largest activation of a language model: (B, T, V) at V = 50,257 is 65× wider
than a (B, T, C) hidden state at C = 768. Plain cross-entropy keeps their fp32 softmax for
backward, and backward then makes their gradient, as large again: over 3 GiB at 8×1024 tokens,
more than all twelve blocks together once --gradient-checkpointing drops theirs. Here the positions
go through the LM head and the loss LOSS_CHUNK_LOGITS logits at a time, and no chunk's logits
outlive it.

## Gradients in the forward pass

Checkpointing each chunk would keep the memory low too, but backward would then compute every
chunk's logits a second time: one more LM-head matmul (V × C per position), which cost 27–29 % of
a training step on a CPU (BENCHMARKS.md, where the step now costs about what the plain loss's
does). Instead, each chunk's gradients are taken while its logits are alive, from the closed form
of cross-entropy's gradient:

    loss = (1/n) Σ_rows logsumexp(z) - z[target],   z = x Wᵀ one row's logits, n the counted rows
    ∂loss/∂z = (softmax(z) - onehot(target)) / n      (0 for a skipped row)
    ∂loss/∂x = (∂loss/∂z) W,    ∂loss/∂W = Σ_rows (∂loss/∂z)ᵀ x

So forward does the three matmuls that forward and backward of the plain loss do, and keeps only
∂loss/∂x and ∂loss/∂W, in fp32 (x's and the weight's shapes: for GPT-2 124M, 154 MB for W, where
the plain loss's softmax at 8×1024 tokens is 1.6 GB); backward just scales them by the incoming
gradient (1, or the scale of gradient accumulation or of GradScaler) and casts them back.
Liger-Kernel's fused linear cross-entropy does the same on GPUs. The loss and gradients equal the
plain ones up to rounding, not bitwise: the sums over rows run in another order, and autograd's
softmax backward rounds ∂/∂z its own way.

Training reads `lm_head.weight` itself, without calling the module. A head whose call is more than
that product (a hook on it, or any module's global hook: a logit soft-cap, a probe; a head of another
class) would then be trained without what evaluation, which calls it, applies: two objectives,
silently. Such a head gets the plain loss, with a warning (`runs_hooks`).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import torch.nn.modules.module as module_hooks
from torch import nn
from torch.autograd.function import once_differentiable

from minigpt.linear import Linear

# How many logits one chunk computes at a time: 2**25 fp32 values are 128 MiB, about 670 positions
# of GPT-2's 50,257-token vocabulary (and a whole 8×1024 batch of a 4,096 one).
LOSS_CHUNK_LOGITS = 2**25


def chunked_lm_loss(lm_head: nn.Module, x: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy of the logits lm_head(x) against targets, positions labelled ignore_index
    skipped (GPT.forward's loss): x (B, T, C), targets (B, T), lm_head without a bias (GPT-2's is
    the token embedding, tied, and has none)."""
    training = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in lm_head.parameters()))
    linear = type(lm_head) in (nn.Linear, Linear)  # a call that is F.linear with its weight, hooks aside
    if not linear or (training and runs_hooks(lm_head)):
        # Training reads lm_head.weight without calling the module, so a call that does more would be
        # trained without what evaluation (which calls the head, chunk by chunk) applies. The plain
        # loss instead, rather than an error: the same loss and gradients as without the chunking;
        # only the memory the chunks save is spent.
        if training:
            what = "has hooks" if linear else f"is a {type(lm_head).__name__}, not an nn.Linear"
            warnings.warn(f"lm_head {what}, which the chunked loss does not call in training: it computes the plain "
                          "loss instead (all the logits at once)")
        return F.cross_entropy(lm_head(x).flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index)
    if lm_head.bias is not None:
        raise ValueError("chunked_lm_loss takes an LM head without a bias (GPT-2's has none), got one with a bias")
    x, targets = x.flatten(0, 1), targets.flatten()  # (B·T, C), (B·T,)
    rows = max(1, LOSS_CHUNK_LOGITS // lm_head.weight.shape[0])
    if training:
        return LinearCrossEntropy.apply(x, lm_head.weight, targets, rows, ignore_index)
    # Evaluation: the chunks' losses alone (through the module: minigpt/linear.py's fast path).
    total = sum(F.cross_entropy(lm_head(xc).float(), tc, ignore_index=ignore_index, reduction="sum")
                for xc, tc in zip(x.split(rows), targets.split(rows)))
    return total / (targets != ignore_index).sum()  # the mean over counted positions, as cross_entropy's


def runs_hooks(module: nn.Module) -> bool:
    """Whether calling `module` runs a hook, its own or a global one (the test Module.__call__
    makes to skip its hook machinery)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or module_hooks._global_forward_hooks
                or module_hooks._global_forward_pre_hooks or module_hooks._global_backward_hooks
                or module_hooks._global_backward_pre_hooks)


class LinearCrossEntropy(torch.autograd.Function):
    """The mean over counted rows of cross_entropy(x Wᵀ, targets), `rows` positions at a time, with
    ∂/∂x and ∂/∂W computed in forward (the module docstring says why and how)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int,
                ignore_index: int) -> torch.Tensor:
        n = (targets != ignore_index).sum()  # the mean's divisor (a tensor: no wait for the host)
        # Both gradients are summed in fp32, whatever the model's dtype (a bf16 sum over ~12 chunks
        # would round every partial sum to 8 bits), and cast back in backward.
        grad_x = torch.zeros(x.shape, dtype=torch.float32, device=x.device) if x.requires_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        # The matmuls run in autocast's dtype when it is on, as the plain head's would, else in the
        # weight's; the weight is cast once here, where autocast would cast it for every chunk. The
        # gradient's matmuls never run in fp16: its range loses softmax's small probabilities (below
        # 6e-8 they are 0), and the loss scale that keeps the plain loss's gradient in range
        # (GradScaler) reaches only backward.
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        grad_dtype = torch.float32 if dtype == torch.float16 else dtype
        w, w_grad = weight.to(dtype), weight.to(grad_dtype)
        with torch.autocast(device, enabled=False):
            for start in range(0, x.shape[0], rows):
                xc, tc = x[start:start + rows], targets[start:start + rows]
                log_p = F.log_softmax(F.linear(xc.to(dtype), w), dim=-1, dtype=torch.float32)  # (rows, V)
                counted = tc != ignore_index
                at = torch.where(counted, tc, 0)[:, None]  # a skipped row's target, as a valid index
                total -= torch.where(counted, log_p.gather(1, at).squeeze(1), 0.0).sum()
                # ∂mean/∂z = (softmax - onehot(target)) / n, built in log_p's own memory; skipped
                # rows 0 (and every row, not NaN, when all are skipped: n = 0).
                g = log_p.exp_()
                g.scatter_add_(1, at, torch.full_like(g[:, :1], -1.0))
                g = g.mul_(counted[:, None] / n.clamp_min(1)).to(grad_dtype)
                if grad_x is not None:
                    grad_x[start:start + rows] = g @ w_grad  # (rows, C)
                if grad_w is not None:
                    grad_w += g.T @ xc.to(grad_dtype)  # (V, C)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.dtypes = x.dtype, weight.dtype
        return total / n

    @staticmethod
    @once_differentiable  # the saved gradients are numbers, not functions of x and W: no second derivative
    def backward(ctx, grad_mean: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w = ctx.saved_tensors
        x_dtype, weight_dtype = ctx.dtypes
        # ∂mean/∂x and ∂mean/∂W were measured in forward: the chain rule only scales them (by 1 in
        # a plain backward; by the gradient-accumulation or loss scale when one is applied).
        dx = (grad_x * grad_mean).to(x_dtype) if grad_x is not None else None
        dw = (grad_w * grad_mean).to(weight_dtype) if grad_w is not None else None
        return dx, dw, None, None, None
