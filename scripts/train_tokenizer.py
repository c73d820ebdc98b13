"""Train a byte-level BPE tokenizer: python scripts/train_tokenizer.py FILES --vocab-size N --out DIR."""
from minigpt.bpe_train import main

raise SystemExit(main())
