"""Pretrain a GPT; under `torchrun --nproc_per_node=N` it trains with DDP (see minigpt/train.py)."""
from minigpt.train import main

raise SystemExit(main())
