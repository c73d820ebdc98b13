"""Sliding-window perplexity of MODEL_DIR on a text file, or a classifier's accuracy on a TSV file (see minigpt/evaluate.py)."""
from minigpt.evaluate import main

raise SystemExit(main())
