"""Shared test settings: keep `transformers` (the oracle in many tests) quiet and offline, and
hypothesis deterministic."""
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
