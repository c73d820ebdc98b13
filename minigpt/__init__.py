"""minigpt: GPT-2 from scratch in plain PyTorch.

text → Tokenizer.encode → ids → GPT (wte + wpe → blocks → ln_f → lm_head) → logits
     → penalties → temperature → top-k → top-p / min-p → draw → KV-cache decode loop
     → Tokenizer.decode → text
"""
from __future__ import annotations

import importlib
import sys
import types

from minigpt.config import GPTConfig
from minigpt.tokenizer import Tokenizer

__all__ = ["GPT", "GPTConfig", "Tokenizer", "generate"]

# GPT and generate need torch (~1 s to import). Every `import minigpt.X` runs this file first, so
# importing them here would make the tokenizer, and the workers its encode_batch forks, load torch
# too. Instead they are imported on first use (PEP 562's module __getattr__): `from minigpt import GPT`
# works as before, and `import minigpt.tokenizer` stays torch-free.
_LAZY = {"GPT": "minigpt.model", "generate": "minigpt.generate"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cache it, so __getattr__ runs once per name
        return value
    if name.startswith("__"):  # __wrapped__, __path__, ...: probed by tools, never a submodule
        raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
    # `import minigpt; minigpt.sampling.sample(...)` worked when eager imports of GPT and generate
    # loaded sampling, model, kv_cache, ... as a side effect; importing a submodule on first use keeps it working.
    try:
        return importlib.import_module(f"minigpt.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"minigpt.{name}":
            raise  # the submodule exists but something it imports is missing
        raise AttributeError(f"module 'minigpt' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`minigpt.generate` names both a submodule and the function in it. Importing a submodule sets
    it as an attribute of its package, so after `import minigpt.generate` the name would mean the
    module and `from minigpt import generate` would return it. Refusing that one binding keeps the
    name for the function (the submodule itself stays in sys.modules, where `from minigpt.generate
    import ...` finds it)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
