"""Pretrain a GPT (`minigpt train`, minigpt/pretrain.py); under `torchrun --nproc_per_node=N` it
trains with DDP (the loop: minigpt/train.py)."""
from minigpt.pretrain import main

raise SystemExit(main())
