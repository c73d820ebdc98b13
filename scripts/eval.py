"""Sliding-window perplexity of MODEL_DIR on a text file (see minigpt/evaluate.py)."""
from minigpt.evaluate import main

raise SystemExit(main())
