"""minigpt: GPT-2 from scratch in plain PyTorch.

text → Tokenizer.encode → ids → GPT (wte + wpe → blocks → ln_f → lm_head) → logits
     → penalties → n-gram ban → temperature → top-k → top-p → min-p → typical → epsilon → eta
     → draw → KV-cache decode loop
     → Tokenizer.decode → text
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # pyproject.toml reads it from here; `minigpt --version` prints it

# The public names, and the module each lives in. They are imported when first used (PEP 562's
# module __getattr__), not by `import minigpt`: a command that needs no model (`minigpt tokenize`,
# `--help`) then never waits the second torch takes to import.
_HOMES = {
    "GPT": "minigpt.model",
    "GPTConfig": "minigpt.config",
    "Tokenizer": "minigpt.tokenizer",
    "generate": "minigpt.generation",
    "stream": "minigpt.generation",
    "stream_text": "minigpt.text_generation",
    "generate_text": "minigpt.text_generation",
    "generate_texts": "minigpt.text_generation",
}
__all__ = ["GPT", "GPTConfig", "Tokenizer", "generate", "stream", "stream_text", "generate_text", "generate_texts"]  # _HOMES' keys

if TYPE_CHECKING:  # what type checkers and editors read, since they run no __getattr__
    from minigpt.config import GPTConfig
    from minigpt.generation import generate, stream
    from minigpt.model import GPT
    from minigpt.text_generation import generate_text, generate_texts, stream_text
    from minigpt.tokenizer import Tokenizer
else:  # hidden from type checkers: to them a module __getattr__ would make any unknown minigpt.X an Any
    def __getattr__(name: str) -> object:
        if name not in _HOMES:
            raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value  # found directly from now on
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
