"""Train a byte-level BPE tokenizer: python scripts/train_tokenizer.py FILES --vocab-size N --out DIR."""
from minigpt.tokenizer_cli import train_main

raise SystemExit(train_main())
