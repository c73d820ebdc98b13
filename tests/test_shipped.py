"""The small Shakespeare model shipped in checkpoints/shakespeare works out of the box."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from minigpt import GPT, Tokenizer

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "shakespeare"


def test_shipped_files_are_complete():
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "log.jsonl", "loss.png"):
        assert (SHIPPED / name).is_file(), f"checkpoints/shakespeare/{name} is missing"
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 12e6, f"the shipped checkpoint should stay a few MB, it is {size / 1e6:.1f} MB"


def test_minigpt_generate_cli_produces_text(tmp_path):
    # The README's second command, run as a user would: no --model, so the shipped default is used.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "minigpt.cli", "generate", "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ROMEO:"), out.stdout
    assert len(out.stdout.strip()) > len("ROMEO:") + 10, f"too little text came back: {out.stdout!r}"


def test_shipped_checkpoint_matches_transformers():
    import transformers  # a test dependency: missing, this must fail, not skip
    ours = GPT.from_pretrained(SHIPPED, dtype=torch.float32)
    hf = transformers.GPT2LMHeadModel.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    tok = Tokenizer.from_pretrained(SHIPPED)
    ids = torch.tensor([tok.encode("First Citizen:\nBefore we proceed any further, hear me speak.\n")])
    with torch.no_grad():
        a, _ = ours(ids)
        b = hf(ids).logits
    diff = (a - b).abs().max().item()
    print(f"shipped checkpoint: max |logits Δ| vs transformers = {diff:.2e}")
    assert diff <= 5e-5  # measured 8.6e-6 (its logits reach ~14)


def test_shipped_tokenizer_round_trips():
    tok = Tokenizer.from_pretrained(SHIPPED)
    assert tok.vocab_size == 4096
    for text in ["ROMEO:\nBut, soft! what light through yonder window breaks?", "  odd  spacing\t\n\n", "naïve café — ünïcödé 🙂"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.eos_token_id == GPT.from_pretrained(SHIPPED).config.eos_token_id
