"""Shared test settings: keep `transformers` (the oracle in many tests) quiet and offline."""
import os

# Tests never reach the network: the HF oracle models are built from configs with random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
