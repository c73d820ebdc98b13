"""Triton kernels (optional: they need the `triton` package, which minigpt/sampling.py imports lazily).

sampling.py fuses the sampler (`temperature → top-k → top-p / min-p → draw`) into one launch per
decode step; sampling_split.py is its small-batch form, each row spread over several programs.
Both are built from the helpers of search.py (the top-k / top-p thresholds, by a bracket search) and
draw.py (the inverse-CDF draw).
"""
