#!/usr/bin/env bash
# Every check that needs a GPU, in one run: GPU time is scarce, so a session that has one starts
# this once and reads the logs. Steps, in order of importance (name some to run only those):
#   tests     pytest on CUDA: tests/test_gpu.py and the fused sampling kernel compiled for the GPU
#   sampling  scripts/bench_sampling.py: the fused kernel vs the torch pipeline and transformers
#   generate  scripts/bench_generate.py --device cuda --compile: decode speed, bandwidth limit, KV bytes
#   train     scripts/bench_train.py on CUDA in bf16, compiled: tokens/s and MFU vs transformers
#
#   bash scripts/gpu_check.sh tests sampling       # only these (each pair fits a 10-minute call)
#   bash scripts/gpu_check.sh generate train
#   bash scripts/gpu_check.sh                      # all four, in order
#
# Logs go to $OUT (the device tool's output folder) or out/gpu_check/. Each step has its own time
# limit, so one that hangs cannot eat the others' time; the last line sums up which passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # this checkout, installed or not
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests sampling generate train)

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__)"
  git log -1 --oneline 2>/dev/null
} 2>&1 | tee "$out/env.txt"

summary=()
run() {  # run NAME SECONDS COMMAND...: the output to $out/NAME.log and the screen
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  summary+=("$name=$([ "$rc" = 0 ] && echo ok || echo "FAILED($rc)")")
}

for step in "${steps[@]}"; do
  case $step in
    tests) run tests 300 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_fused_sampling.py -k "not interpreter" ;;
    sampling) run sampling 150 python3 scripts/bench_sampling.py --repeats 5 --calls 20 ;;
    generate) run generate 200 python3 scripts/bench_generate.py --device cuda --compile --repeats 5 --new-tokens 128 ;;
    train) run train 180 python3 scripts/bench_train.py --device cuda --dtype bfloat16 --compile --configs 124M \
             --batch-size 16 --block-size 1024 --steps 10 --warmup 3 ;;
    *) echo "unknown step '$step' (tests, sampling, generate, train)"; exit 2 ;;
  esac
done
echo "gpu_check: ${summary[*]}" | tee -a "$out/env.txt"
