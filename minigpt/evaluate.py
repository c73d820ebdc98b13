"""Perplexity of a model on a text file, with a sliding window (`minigpt eval MODEL_DIR FILE`).

Where it sits: text → the tokenizer's ids (special tokens' text read as their ids, as `minigpt
prepare` reads it: minigpt/data.py's `encode_text`) → windows of ≤ max_length tokens → GPT → logits →
cross-entropy of each token that the window is responsible for → exp(mean) = perplexity.

Why a sliding window: a model sees at most n_positions tokens. Cutting the text into disjoint
blocks would score the first tokens of every block with almost no context, which overstates the
perplexity. Instead each window starts `stride` tokens after the previous one and scores only
its last tokens, the ones no earlier window scored; the tokens before them are context only (label
IGNORE_INDEX = -100). With stride < max_length every token but the first is scored exactly once,
with at least max_length - stride tokens of context (except near the start); smaller strides give
more context and cost more forward passes. With stride = max_length the windows are disjoint, and
the first token of each is not scored at all (nothing before it is in the window).

This is the computation of Hugging Face's perplexity guide
(https://huggingface.co/docs/transformers/perplexity), with one difference: the guide weights each
window's mean loss by (valid labels - 1), which undercounts every window after the first by one
token; here each token's negative log-likelihood is summed, so the mean is over exactly the
tokens scored.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from minigpt.checks import as_count
from minigpt.generate_args import NONFINITE, warn_if_training
from minigpt.model import IGNORE_INDEX  # IGNORE_INDEX: the label of a context-only position: the loss skips it

# perplexity's arguments that a flag of `minigpt eval` sets (max_length is --max-length): its errors
# name the argument, the CLI's name the flag (minigpt/cli.py's flag_words renames them).
FLAG_ARGS = ("max_length", "stride")


@torch.no_grad()
def sliding_window_nll(model, ids: torch.Tensor, max_length: int, stride: int,
                       progress: bool = False) -> tuple[float, int, torch.Tensor]:
    """Sum of -log p(token | up to max_length - 1 earlier tokens) over the scored tokens, their
    count, and which they are: (N,) bool, True = scored (bits per byte counts their bytes).

    `model(x)` must return (logits, ...) as minigpt's GPT does. ids: (N,) token ids.
    """
    n = ids.numel()
    if n < 2:
        raise ValueError(f"need at least 2 tokens to score, got {n}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")
    device = next(model.parameters()).device
    nll_sum, prev_end = 0.0, 0
    scored = torch.zeros(n, dtype=torch.bool)
    # The last window is the first to reach the end (begin + max_length >= n): the range stops
    # there, so the progress bar's total is the number of windows that run.
    starts = range(0, max(n - max_length, 0) + stride, stride)
    for begin in tqdm(starts, desc="windows", disable=not progress):
        end = min(begin + max_length, n)
        new = end - prev_end  # tokens no earlier window scored: this window's last `new`
        window = ids[begin:end].to(device)  # (L,)
        labels = window.clone()
        labels[: len(window) - new] = IGNORE_INDEX  # context only
        # logits[t] predicts token t + 1, so the targets are the labels shifted left by one.
        targets = torch.cat([labels[1:], labels.new_full((1,), IGNORE_INDEX)])  # (L,)
        logits = model(window[None])[0][0]  # (L, V)
        nll_sum += F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
        scored[max(end - new, begin + 1) : end] = True  # the window's first token has no context: never scored
        prev_end = end  # (the last start's window ends at n: `starts` stops there)
    return nll_sum, int(scored.sum()), scored


def check_ids(model, ids) -> torch.Tensor:
    """ids as a (N,) integer tensor: (1, N) (one text, as the tokenizer returns it) is squeezed. A
    list, float ids or ids outside the vocabulary would fail deep inside torch; here they are named."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a tensor of token ids, (N,) or (1, N); got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:  # truncated, or a mask: no ids
        raise TypeError(f"ids must be an integer tensor of token ids, got {ids.dtype}")
    ids = ids.long()  # int32, uint8, or a uint16 token file's: the embedding and cross_entropy's targets take int64
    if ids.dim() == 2 and ids.size(0) == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"ids must be (N,) or (1, N): one text's token ids, got shape {tuple(ids.shape)}")
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < model.config.vocab_size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"ids must be in [0, vocab_size={model.config.vocab_size}), got token id {bad}")
    return ids


def perplexity(model, ids: torch.Tensor, max_length: int | None = None, stride: int | None = None,
               progress: bool = False, token_bytes: torch.Tensor | None = None) -> dict[str, float]:
    """{"nll": mean nats per token, "ppl": exp(nll), "tokens": how many were scored, "nll_sum": their
    total nats}, and with `token_bytes` (V,), each token's length in bytes, "bpb": bits per byte of
    the scored tokens. max_length defaults to the context, stride to half of max_length. ids: (N,)
    token ids, or (1, N) as the tokenizer's return_tensors="pt" gives them."""
    ids = check_ids(model, ids)
    if token_bytes is not None:  # before the windows run: a wrong table would give a plausible, wrong bpb
        check_token_bytes(token_bytes, model.config.vocab_size)
    warn_if_training(model, "scoring")
    max_length = model.config.n_positions if max_length is None else as_count("max_length", max_length)  # 0: an error
    if not 2 <= max_length <= model.config.n_positions:  # a window's first token has no context: 1 scores nothing
        raise ValueError(f"max_length must be in [2, n_positions={model.config.n_positions}] (a window's first token "
                         f"is context only, so a 1-token window scores nothing), got {max_length}")
    stride = max(max_length // 2, 1) if stride is None else as_count("stride", stride)  # 2.5 or True: no stride
    nll_sum, count, scored = sliding_window_nll(model, ids, max_length, stride, progress)
    nll = nll_sum / count
    # exp overflows a float past ~709.78 (a diverged model): its perplexity is then inf, not an error
    result = {"nll": nll, "ppl": math.exp(nll) if nll < 709 else math.inf, "tokens": count, "nll_sum": nll_sum}
    if token_bytes is not None:
        # Bits per byte: nats → bits, spread over the bytes of the tokens scored (not the first token,
        # nor, with disjoint windows, each window's first). Unlike perplexity it does not depend on
        # the tokenizer, so models with different vocabularies compare.
        n_bytes = int(token_bytes.cpu()[ids.cpu()[scored]].sum())
        if n_bytes <= 0:
            raise ValueError("token_bytes gives the scored tokens 0 bytes in all, so bits per byte is undefined: "
                             "it must hold each token's length in bytes (len(tok.decode_bytes([i])))")
        result["bpb"] = nll_sum / math.log(2) / n_bytes
    return result


def check_token_bytes(token_bytes, vocab_size: int) -> None:
    """`token_bytes` as perplexity reads it: (vocab_size,), each token's length in bytes, none
    negative. Another tokenizer's table (longer or shorter) or a negative count would give a bits
    per byte that looks right and is not, or fail as a bare IndexError."""
    if not isinstance(token_bytes, torch.Tensor) or tuple(token_bytes.shape) != (vocab_size,):
        got = f"shape {tuple(token_bytes.shape)}" if isinstance(token_bytes, torch.Tensor) else type(token_bytes).__name__
        raise ValueError(f"token_bytes must be a ({vocab_size},) tensor, each token's length in bytes (the model's "
                         f"vocab_size={vocab_size}; 0 for ids past its tokenizer's), got {got}")
    if token_bytes.numel() and int(token_bytes.min()) < 0:
        raise ValueError(f"token_bytes must be ≥ 0 (each token's length in bytes), got {int(token_bytes.min())}")


def check_tokenizer_fits(config, tokenizer, model_dir, tokenizer_dir) -> None:
    """Refuse a tokenizer that is not the model's own (`GPTConfig.fits_tokenizer`), for the CLIs
    that take --tokenizer (eval, generate). A larger tokenizer's ids would index past the embedding
    table, and a smaller one's mean other tokens to the model, unless the model's vocabulary is the
    same one padded."""
    if why := config.tokenizer_mismatch(tokenizer.vocab_size, tokenizer.eos_token_id, f"the model {model_dir}",
                                        f"the tokenizer in {tokenizer_dir}"):
        raise ValueError(f"{why}; pass --tokenizer with the model's own tokenizer")


def main(argv: list[str] | None = None) -> int:
    from minigpt.checkpoint import DTYPE_NAMES
    from minigpt.cli import prog

    parser = argparse.ArgumentParser(prog=prog("eval"), description="Sliding-window perplexity of a model on a text file.")
    parser.add_argument("model", help="model directory (HF layout: config.json, model.safetensors), or a GPT-2 size by name (gpt2, ..., gpt2-xl)")
    parser.add_argument("file", help="UTF-8 text file to score (-: standard input)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    parser.add_argument("--max-length", type=int, help="window length (default: the model's n_positions)")
    parser.add_argument("--stride", type=int, help="tokens between window starts (default: max_length / 2)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto: cuda when available (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="weights and math (default: float32)")
    args = parser.parse_args(argv)
    from minigpt.checkpoint import is_classifier_checkpoint
    from minigpt.data import encode_text
    from minigpt.files import STDIN, read_text_or_stdin
    from minigpt.cli import flag_words
    from minigpt.model import GPT
    from minigpt.tokenizer import Tokenizer

    try:
        path = Path(args.file)
        if args.file != STDIN and not path.is_file():
            what = "is a directory" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
            raise FileNotFoundError(f"text file {path} {what}")  # (a device such as /dev/null, a FIFO: not a file)
        text = read_text_or_stdin(args.file)
        if is_classifier_checkpoint(args.model):  # in eval's words (GPT.from_pretrained's refusal names the classifier loader)
            raise ValueError(f"{args.model} is a classifier (GPT2ForSequenceClassification); eval scores a language model "
                             "(GPT2LMHeadModel), such as a checkpoint of `minigpt train` or of `minigpt finetune --task lm`")
        # The model first: a wrong MODEL path should be reported as the model's, not as a missing tokenizer.
        model = GPT.from_pretrained(args.model, dtype=args.dtype, device=args.device)
        try:
            tok = Tokenizer.from_pretrained(args.tokenizer or args.model)
        except FileNotFoundError as e:
            if args.tokenizer is not None:
                raise
            # `model.save_pretrained(dir)` writes the weights and config.json only, as generate says too.
            raise FileNotFoundError(f"{e}: for a model saved without its tokenizer, pass --tokenizer DIR (GPT-2's, "
                                    "shipped: --tokenizer gpt2)") from None
        check_tokenizer_fits(model.config, tok, args.model, args.tokenizer or args.model)  # a meaningless perplexity
        ids = torch.tensor(encode_text(tok, text), dtype=torch.long)
        token_bytes = torch.zeros(model.config.vocab_size, dtype=torch.long)  # (V,): each token's length in bytes
        for i in ids.unique().tolist():  # (only the tokens of this text are needed)
            token_bytes[i] = len(tok.decode_bytes([i]))
        with flag_words(FLAG_ARGS):  # "stride must be in [1, max_length=64]" → "--stride ... --max-length 64"
            result = perplexity(model, ids, args.max_length, args.stride, progress=True, token_bytes=token_bytes)
        if not math.isfinite(result["nll"]):  # "perplexity nan" and exit 0 would pass for a score
            raise ValueError(f"the loss is {result['nll']}: {NONFINITE}")
    except (ValueError, OSError) as e:  # OSError: a file it may not read, or a directory where a file should be
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C on a long text: one line, as the other commands end, not a traceback
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT
    print(f"perplexity {result['ppl']:.4f}  nll {result['nll']:.4f} nats/token  {result['bpb']:.4f} bits/byte  "
          f"({result['tokens']:,} tokens scored)")
    return 0
