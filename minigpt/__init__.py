"""minigpt: GPT-2 from scratch in plain PyTorch.

text → Tokenizer.encode → ids → GPT (wte + wpe → blocks → ln_f → lm_head) → logits
     → penalties → n-gram ban → temperature → top-k → top-p / min-p → draw → KV-cache decode loop
     → Tokenizer.decode → text
"""
__version__ = "0.1.0"  # pyproject.toml reads it from here; `minigpt --version` prints it

from minigpt.config import GPTConfig
from minigpt.generate import generate
from minigpt.model import GPT
from minigpt.text_generation import generate_text, generate_texts
from minigpt.tokenizer import Tokenizer

__all__ = ["GPT", "GPTConfig", "Tokenizer", "generate", "generate_text", "generate_texts"]
