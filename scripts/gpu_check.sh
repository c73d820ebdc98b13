#!/usr/bin/env bash
# Every check that needs a GPU, in one run. A session that is lent a GPU gets 15 minutes of device
# time in all, the machine's start (a minute or two) included, so this script fits ONE device call:
#
#   bash scripts/gpu_check.sh                  # every step, ≤ GPU_CHECK_BUDGET s (default 560) together
#   bash scripts/gpu_check.sh sampling         # only the steps named
#
# Steps, in order of importance; each runs under its own time limit, cut to what is left of the
# budget, so a slow or hanging step costs the ones after it only its share:
#   tests     pytest on CUDA: the fused sampling kernel compiled for the GPU (kernel-tests.log), then
#             tests/test_gpu.py (gpu-tests.log)
#   sampling  scripts/bench_sampling.py: the fused kernel vs the torch pipeline and transformers
#   kernels   bench_sampling.py --kernels at batch 1 and 8: each launch's GPU µs (torch.profiler)
#   splits    bench_sampling.py --splits at batch 1, 4 and 8: the graph's µs at each split S (the
#             figures MIN_SPLITS in minigpt/kernels/sampling_split.py is chosen by)
#   generate  scripts/bench_generate.py --device cuda --compile: decode speed, bandwidth limit, KV bytes
#   train     scripts/bench_train.py on CUDA in bf16, compiled: tokens/s and MFU vs transformers
#   memory    (not in the default run) bench_train.py with --gradient-checkpointing --chunked-loss,
#             eager: each row's peak memory and speed with and without the switches (about a minute)
#
# Logs go to $OUT (the device tool's output folder) or out/gpu_check/, one file a step; the last
# line of env.txt says which steps passed and how long each took. Exit status 1: a step failed or
# was not run.
set -uo pipefail
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests sampling kernels splits generate train)
for step in "${steps[@]}"; do  # every name now: a typo found after the steps before it would have spent the lease
  case $step in tests|sampling|kernels|splits|generate|train|memory) ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown step '$step' (tests, sampling, kernels, splits, generate, train, memory)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # this checkout, installed or not
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-560}))

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__)"
  # The device gets a copy of the working tree, perhaps without .git: GPU_CHECK_COMMIT=$(git rev-parse --short HEAD)
  echo "commit ${GPU_CHECK_COMMIT:-$(git log -1 --oneline 2>/dev/null || echo unknown: pass GPU_CHECK_COMMIT)}"
} 2>&1 | tee "$out/env.txt"
if ! python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then  # else every GPU test "passes" as skipped
  echo "gpu_check: no CUDA device visible to torch (see $out/env.txt); every step needs one" | tee -a "$out/env.txt" >&2
  exit 2
fi

per_test() {  # pytest's flag for a per-test limit, where pytest-timeout is installed (the device image has it)
  python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout $1"
}
workers() {  # pytest-xdist's flag for N processes, where it is installed: Triton compiles a kernel on one core
  python3 -c "import xdist" 2>/dev/null && echo "-n $1 --dist worksteal"
}

summary=()
run() {  # run NAME SECONDS COMMAND...: the output to $out/NAME.log and the screen
  local name=$1 limit=$2 left=$((deadline - SECONDS)) start=$SECONDS
  shift 2
  if [ "$left" -lt 30 ]; then
    summary+=("$name=not-run(budget-spent)")
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $name (≤ ${limit} s): $*"
  timeout -k 15 "$limit" "$@" 2>&1 | tee "$out/$name.log"  # -k: a step that ignores SIGTERM (training saves first)
  local rc=${PIPESTATUS[0]}
  summary+=("$name=$([ "$rc" = 0 ] && echo ok || echo "FAILED($rc)"):$((SECONDS - start))s")
}

for step in "${steps[@]}"; do
  case $step in
    # The kernel tests first: they check what changed most often. Two runs, each with its own limit,
    # so a slow first one does not take test_gpu.py's results with it. Every kernel variant compiles
    # on a bare machine: ~100 launch shapes (an estimate from a sample of them compiled for sm_90 on
    # a CPU machine: ~7 min of one core), so 4 processes compile them side by side. -v names each test as it ends: a step killed at its limit never prints pytest's
    # summary, and -q's dots would not say which test failed or hung; --timeout names a test that hangs.
    tests) run kernel-tests 170 python3 -m pytest -v -p no:cacheprovider --durations=10 $(per_test 120) $(workers 4) \
             tests/test_fused_sampling.py -k "not interpreter"
           run gpu-tests 200 python3 -m pytest -v -p no:cacheprovider --durations=10 $(per_test 150) tests/test_gpu.py ;;
    sampling) run sampling 110 python3 scripts/bench_sampling.py --repeats 5 --calls 20 ;;
    kernels) run kernels 60 python3 scripts/bench_sampling.py --batch 1 8 --kernels --repeats 3 --calls 20 ;;
    splits) run splits 150 python3 scripts/bench_sampling.py --batch 1 4 8 --splits 1 8 16 32 --repeats 3 --calls 20 ;;
    generate) run generate 180 python3 scripts/bench_generate.py --device cuda --compile --repeats 3 --new-tokens 128 \
                --batches 1 --ttft-lengths 256,1024 ;;  # batch 1 is the target's; each compiled batch size compiles anew
    train) run train 120 python3 scripts/bench_train.py --device cuda --dtype bfloat16 --compile --configs 124M \
             --batch-size 16 --block-size 1024 --steps 10 --warmup 3 ;;
    memory) run memory 120 python3 scripts/bench_train.py --device cuda --dtype bfloat16 --configs 124M \
              --batch-size 8 --block-size 1024 --steps 5 --warmup 2 --gradient-checkpointing --chunked-loss ;;
  esac
done
echo "gpu_check: ${summary[*]}" | tee -a "$out/env.txt"
case "${summary[*]}" in *FAILED*|*not-run*) exit 1 ;; esac  # the device tool reports the exit status
