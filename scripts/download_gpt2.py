"""Download GPT-2 from the Hugging Face Hub: `python scripts/download_gpt2.py gpt2 [--out DIR]`.

Same as `minigpt download`; the logic lives in minigpt/download.py.
"""
from minigpt.download import main

raise SystemExit(main())
