"""Tokenize text files into train.bin / val.bin + meta.json (see minigpt/data.py)."""
from minigpt.data import main

raise SystemExit(main())
