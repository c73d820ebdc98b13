#!/usr/bin/env bash
# Reproduce the shipped model in checkpoints/shakespeare/ with minigpt's own tools:
# train a BPE tokenizer on Tiny Shakespeare, tokenize the text (last 10% held out), pretrain a
# small GPT, keep the checkpoint with the best validation loss, and ship it in float16.
#
#   TEXT=path/to/tinyshakespeare.txt bash scripts/train_shakespeare.sh    # on a GPU: about 1 minute on an H100
#
# TEXT is Tiny Shakespeare (1.1 MB: char-rnn's data/tinyshakespeare/input.txt,
# https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt); its
# default, shared/data/tinyshakespeare.txt beside the checkout, is where this project's machines keep it.
# The result replaces the shipped files in SHIP (default checkpoints/shakespeare; git shows the
# difference); set SHIP=out/my-shakespeare to keep them. The variables set below (WORK, PYTHON,
# VOCAB, LAYERS, HEADS, EMBD, DROPOUT, ITERS, LR, DEVICE) can be set from the environment; the
# other flags are fixed. The defaults are paths in this checkout, wherever the script is run from;
# the script takes no arguments (any argument prints this text and changes nothing).
set -euo pipefail
if [ $# -gt 0 ]; then  # before anything is written: a `--help` once started a full run over SHIP
  case $1 in
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; echo "train_shakespeare.sh: takes no arguments, got '$*'" >&2; exit 2 ;;
  esac
fi
root=$(cd "$(dirname "$0")/.." && pwd)  # the checkout, so that the run works from any directory
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}  # this checkout's minigpt, installed or not
TEXT=${TEXT:-$root/../shared/data/tinyshakespeare.txt}
if [ ! -f "$TEXT" ]; then
  echo "train_shakespeare.sh: no text at TEXT=$TEXT; set TEXT to Tiny Shakespeare (char-rnn's input.txt:" \
       "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)" >&2
  exit 2
fi
WORK=${WORK:-$root/out/shakespeare}
SHIP=${SHIP:-$root/checkpoints/shakespeare}
PY=${PYTHON:-python}
VOCAB=${VOCAB:-4096} LAYERS=${LAYERS:-4} HEADS=${HEADS:-4} EMBD=${EMBD:-256}
DROPOUT=${DROPOUT:-0.2} ITERS=${ITERS:-1000} LR=${LR:-1e-3}
DEVICE=${DEVICE:-auto}
if [ -n "$(ls -A "$WORK/run" 2>/dev/null)" ]; then  # `train` would refuse it, but only after the tokenizer and data
  echo "train_shakespeare.sh: $WORK/run already holds a run; remove $WORK or set WORK=another/dir" >&2
  exit 2
fi

# --overwrite: WORK/tokenizer and WORK/data are this script's own, made again each time it runs
$PY -m minigpt.cli tokenize --train "$TEXT" --vocab-size "$VOCAB" --out "$WORK/tokenizer" --overwrite
$PY -m minigpt.cli prepare "$TEXT" --tokenizer "$WORK/tokenizer" --out "$WORK/data" --val-fraction 0.1 --overwrite
$PY -m minigpt.cli train --data "$WORK/data" --out "$WORK/run" --device "$DEVICE" --seed 1337 \
    --preset gpt2-mini --n-layer "$LAYERS" --n-head "$HEADS" --n-embd "$EMBD" --block-size 256 \
    --dropout "$DROPOUT" --batch-size 64 --max-iters "$ITERS" --warmup-iters 100 \
    --lr "$LR" --min-lr 1e-4 --beta2 0.99 --weight-decay 0.1 --eval-interval 100 --eval-iters 40
$PY "$root/scripts/export_checkpoint.py" "$WORK/run/best" "$SHIP" --dtype float16 --overwrite
cp "$WORK/run/loss.png" "$SHIP/"
# The log without its start records (this machine's paths, time and checkout): the losses alone,
# read as minigpt reads a log (a torn last record left out).
$PY -c 'import json, sys, pathlib; from minigpt.run_log import is_opening, read_log
sys.stdout.writelines(json.dumps(r) + "\n" for r in read_log(pathlib.Path(sys.argv[1])) if not is_opening(r))' \
    "$WORK/run" > "$SHIP/log.jsonl"

# Bits per character on the held-out last 10% (the text is ASCII, so bytes = characters),
# scored with a sliding window over the exact validation text that `prepare` held out (val.txt).
$PY -m minigpt.cli eval "$SHIP" "$WORK/data/val.txt" --stride 128 --dtype float32 | tee "$SHIP/val_eval.txt"
