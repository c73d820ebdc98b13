"""Shared test settings: keep `transformers` (the oracle in many tests) quiet and offline,
hypothesis deterministic, and autograd on after every test."""
import os

# Tests never reach the network: the HF oracle models are built from configs with random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Property tests draw the same examples on every run (no random seed, no example database), so a
# failure reproduces and a pass means the same thing each time. HYPOTHESIS_PROFILE=explore draws
# new examples per run, for hunting beyond the fixed set.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _autograd_is_left_on():
    """A test (or the code it calls) that turns autograd off for good fails here, itself: once
    (bench_generate's main called torch.set_grad_enabled(False)), 119 later training tests failed
    far away, with "element 0 of tensors does not require grad"."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd off (torch.set_grad_enabled(False) outside a with block)")
