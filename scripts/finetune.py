#!/usr/bin/env python
"""Fine-tune a pretrained GPT-2: `python scripts/finetune.py --init MODEL_DIR --strategy lora --task lm --data FILE... --out DIR`;
under `torchrun --nproc_per_node=N` it fine-tunes with DDP (see minigpt/finetune.py)."""
from minigpt.finetune import main

raise SystemExit(main())
