"""minigpt's Linear: nn.Linear, with inference on x86 CPUs run by oneDNN on a pre-packed weight.

Why it exists: one decode step is ~all matrix × vector products (every weight, read once, for
one token per row), so their speed is the speed of generation. Left to itself, PyTorch on x86
sends fp32 products to Intel MKL, which runs its generic code on non-Intel CPUs, and bf16 ones
to oneDNN, which re-packs the weight into its blocked layout (the order its AVX-512 kernels read)
on *every* call. Packing each weight once and calling oneDNN directly makes GPT-2 124M's
decode-step products ~1.7× faster in bf16 and fp32 at batch 1 and ~3× in fp32 at batch 8 on the
AMD EPYC machine minigpt is tested on (scripts/bench_generate.py, BENCHMARKS.md).

Same math, same parameters: outputs differ from F.linear only by float rounding (oneDNN sums in
another order). The cost is memory: while a module serves inference it keeps the packed copy
beside its weight (as much memory again), rebuilt when the weight changes and dropped as soon as
the module trains again. Training (autograd: the oneDNN op has no backward), torch.compile (it
picks its own kernels), GPUs, float16 and non-x86 CPUs use plain F.linear.
"""
from __future__ import annotations

import platform

import torch
import torch.nn as nn
import torch.nn.functional as F

ONEDNN = platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()


class Linear(nn.Linear):
    """y = x W^T + b with W stored (out, in), exactly nn.Linear's parameters and state dict."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed: tuple | None = None  # (key of the weight it was packed from, packed tensor)

    def __getstate__(self) -> dict:
        # The packed copy is a cache (and an opaque oneDNN tensor that cannot be copied or
        # pickled): copies of the module start without it and pack again when first used.
        return {**self.__dict__, "_packed": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (ONEDNN and x.is_cpu and x.dtype in (torch.float32, torch.bfloat16) and x.dtype == self.weight.dtype
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()):
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight(), self.bias, "none", [], "")
        if torch.is_grad_enabled() and self._packed is not None:
            self._packed = None  # training again: free the inference copy
        return F.linear(x, self.weight, self.bias)

    def packed_weight(self) -> torch.Tensor:
        """The weight in oneDNN's blocked layout, packed once and re-packed only if it changed
        (new tensor, new dtype, or an in-place update, which bumps the tensor's version)."""
        w = self.weight
        if w.is_inference():  # made under torch.inference_mode: no version counter, so an in-place
            return w  # change could not be seen; oneDNN then packs it per call, as torch would
        key = (w.data_ptr(), w.dtype, w._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach()))
        return self._packed[1]
