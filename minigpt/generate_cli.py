"""`minigpt generate`: the command line in front of minigpt/generation.py.

Where it sits: `minigpt generate ...` (minigpt/cli.py) runs `main`, which reads the flags
(`build_parser`), refuses those the chosen mode would silently ignore (`check_flags`), loads the
model and tokenizer (`load_model_and_tokenizer`), fits the prompt to the context (`fit_prompt`), and
hands it to minigpt/text_generation.py's `stream_text` (one text, printed as it arrives with
--stream) or `generate_text` (-n samples or --num-beams) in `print_texts`, or to minigpt/explain.py
(--explain, `print_explained`). With --prompts-file, a file of prompts (`read_prompts`) goes to
`generate_texts` in batches, and each prompt's texts come out as one JSON line (`print_jsonl`).
Sampling without --seed draws a seed here and shows it on stderr (`draw_seed`, `show_seed`), so
that any sample can be drawn again.
A value those functions refuse is reported by its flag, not by their Python name (minigpt/cli.py's `flag_words`).
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from minigpt.cli import FAILED, flag_words, prog
from minigpt.config import CHECKPOINTS
from minigpt.files import json_line, read_text_or_stdin, source_name, typed_text, user_path
from minigpt.generation import run_to_end
from minigpt.generate_args import tokens_fed
from minigpt.penalties import PENALTIES_OFF
from minigpt.progress_bar import progress_bar
from minigpt.sampling import SAMPLING_DEFAULTS, check_seed
from minigpt.text_generation import PromptTooLong, batch_seeds, fit_context, generate_text, generate_texts, stream_text

if TYPE_CHECKING:  # type hints only: the functions that need them import them when they run
    from minigpt.model import GPT
    from minigpt.stats import GenerationStats
    from minigpt.tokenizer import Tokenizer

# The small model shipped with the source tree; found beside the package, so `minigpt generate`
# works from any directory of a checkout (or an editable install).
DEFAULT_MODEL = str(CHECKPOINTS / "shakespeare")


def unescape(text: str) -> str:
    r"""`--stop '\n\n'` means two newlines: a shell passes a backslash and an n, and the stop strings
    people want are mostly line ends. Only \n, \r, \t and \\ change; any other backslash stays."""
    return re.sub(r"\\([nrt\\])", lambda m: {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[m.group(1)], text)


# --early-stopping's words for transformers' three modes (generate's `early_stopping`).
EARLY_STOPPING = {"false": False, "true": True, "never": "never"}

# generate's arguments that a flag of this command sets, each the flag's name in Python's spelling
# (top_p is --top-p). generate's errors name the argument ("top_p must be in (0, 1]"); this
# command's errors name the flag, so `flag_words` renames these in the errors it passes on.
FLAG_ARGS = ("max_new_tokens", "min_new_tokens", *SAMPLING_DEFAULTS, *PENALTIES_OFF, "no_repeat_ngram_size", "num_beams",
             "num_return_sequences", "length_penalty", "early_stopping", "stop", "seed", "sampler", "slide", "batch_size")
# The filters a draw goes through after its temperature: what greedy decoding and beam search ignore.
FILTERS = tuple(name for name in SAMPLING_DEFAULTS if name != "temperature")


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The flags. With defaults=False a flag that is not typed is left out of the parsed namespace,
    which tells the flags a user typed from those left at their defaults (`typed_flags`)."""
    from minigpt.checkpoint import DTYPE_NAMES

    def default(value):
        return value if defaults else argparse.SUPPRESS

    p = argparse.ArgumentParser(prog=prog("generate"), description="Generate text with a GPT-2 checkpoint.")
    p.add_argument("--model", type=user_path, default=default(DEFAULT_MODEL),
                   help="checkpoint directory, or a GPT-2 size by name: gpt2, gpt2-medium, gpt2-large, gpt2-xl (found or downloaded; see README) (default: the shipped checkpoints/shakespeare)")
    p.add_argument("--tokenizer", type=user_path, default=default(None), metavar="DIR",
                   help="tokenizer directory, for a model saved without one (default: the --model directory; "
                        "GPT-2's, shipped: gpt2)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", default=default(""), help="the text to continue (default: empty = <|endoftext|>)")
    src.add_argument("--prompt-file", type=user_path, default=default(None), help="read the prompt from this file (-: standard input)")
    src.add_argument("--prompts-file", type=user_path, default=default(None), metavar="F",
                     help='many prompts: JSON Lines, each line a JSON string or an object with a "prompt"; prints one '
                          'JSON line per prompt, in order: {"prompt": ..., "texts": [-n texts]}, with the other fields '
                          'of its object (-: standard input)')
    p.add_argument("--batch-size", type=int, default=default(8), help="with --prompts-file: prompts run at once (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=default(200),
                   help="tokens to generate, at most the model's context n_positions unless --slide (default: 200)")
    p.add_argument("--min-new-tokens", type=int, default=default(0), help="no EOS before this many (default: 0)")
    p.add_argument("--temperature", type=float, default=default(0.8), help="0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=default(0), help="0 = off")
    p.add_argument("--top-p", type=float, default=default(1.0), help="1 = off")
    p.add_argument("--min-p", type=float, default=default(0.0), help="0 = off")
    p.add_argument("--typical-p", type=float, default=default(1.0),
                   help="1 = off; keeps the tokens whose -log p is nearest the entropy (sampled with torch)")
    p.add_argument("--epsilon-cutoff", type=float, default=default(0.0),
                   help="0 = off; drops tokens less likely than this (e.g. 3e-4; sampled with torch)")
    p.add_argument("--eta-cutoff", type=float, default=default(0.0),
                   help="0 = off; epsilon's floor scaled by the row's entropy, min(η, √η·e^-H) (sampled with torch)")
    p.add_argument("--repetition-penalty", type=float, default=default(1.0), help="1 = off; on prompt + generated tokens")
    p.add_argument("--presence-penalty", type=float, default=default(0.0), help="0 = off; on generated tokens")
    p.add_argument("--frequency-penalty", type=float, default=default(0.0), help="0 = off; on generated tokens")
    p.add_argument("--no-repeat-ngram-size", type=int, default=default(0), metavar="N",
                   help="0 = off; no N tokens in a row twice, prompt included (greedy, sampling, beams, --explain)")
    p.add_argument("--num-beams", type=int, default=default(1), help="> 1: beam search (deterministic)")
    p.add_argument("--num-return-sequences", "-n", type=int, default=default(1),
                   help="texts to print: that many samples, or with --num-beams that many of the best beams")
    p.add_argument("--length-penalty", type=float, default=default(1.0), help="beam search: score / length ** this")
    p.add_argument("--early-stopping", default=default("false"), choices=list(EARLY_STOPPING),
                   help="beam search: true = stop once num_beams beams are finished; false = once no running beam "
                        "can beat them at its current length; never = not even at its best length (default: false)")
    p.add_argument("--stop", action="append", default=default(None), type=unescape,
                   help=r"stop string (repeatable); not printed. \n is a newline (\r, \t, \\ as in Python)")
    p.add_argument("--stream", action="store_true", default=default(False), help="print text as it is generated")
    p.add_argument("--stats", action="store_true", default=default(False),
                   help="print TTFT, TPOT, tokens/s, KV-cache and the process's peak memory (with --compile, TTFT includes importing torch's compiler and TPOT compiling the step: seconds, once a process)")
    p.add_argument("--explain", action="store_true", default=default(False), help="show each step's candidates after every filter")
    p.add_argument("--device", default=default("auto"), help="cpu, cuda, cuda:N, mps or auto: cuda when available (default: auto)")
    p.add_argument("--dtype", default=default("float32"), choices=DTYPE_NAMES, help="weights and math (default: float32)")
    p.add_argument("--seed", type=int, default=default(None),
                   help="makes sampling reproducible (default: a random draw, shown on stderr to pass back here)")
    p.add_argument("--compile", action="store_true", default=default(False), help="compile the decode step (torch.compile)")
    p.add_argument("--sampler", default=default("auto"), choices=["auto", "torch", "triton"],
                   help="auto: Triton's fused kernel on CUDA, else torch (default: auto)")
    p.add_argument("--slide", type=int, default=default(0), metavar="N",
                   help="go on past the context: when it is full, keep its last N tokens (0 = off, the default; "
                        "N = n_positions is nanoGPT's crop, slow: one prefill per token)")
    p.add_argument("--truncate-left", action="store_true", default=default(False),
                   help="keep the prompt's last tokens if it is too long for the context with --max-new-tokens")
    return p


# A seed drawn for a run without --seed is below this: a value --seed takes (non-negative), one a
# signed 64-bit integer holds wherever it is kept, and as unlikely to repeat as torch's own 64-bit seeds.
DRAWN_SEED_BELOW = 2**63


def draw_seed(args: argparse.Namespace) -> int | None:
    """A run that samples (--temperature > 0, no beams) without --seed draws its seed here and uses
    it as --seed, so that `show_seed` can tell the user how to draw the same texts again: torch's own
    unseeded draw would be lost with the process. Returns the seed drawn; None where --seed was given
    (the output stays what that seed draws) or nothing is drawn (greedy, beams)."""
    if args.seed is not None or args.temperature == 0 or args.num_beams > 1:
        return None
    # From the OS, not torch's RNG: a caller that ran torch.manual_seed (a notebook, a test) would get
    # the same "random" seed every run.
    args.seed = secrets.randbelow(DRAWN_SEED_BELOW)
    return args.seed


def show_seed(seed: int | None) -> None:
    """The seed `draw_seed` drew, as one line on stderr: stdout stays the texts alone (or JSON Lines).
    The same flags with --seed N draw the same output again; with --prompts-file the one seed covers
    the whole file, as every batch's seed is derived from it."""
    if seed is not None:
        sys.stdout.flush()  # the texts first, then the line about them
        print(f"{prog('generate')}: seed {seed} (drawn; add --seed {seed} to draw the same output again)", file=sys.stderr)


def typed_flags(argv: list[str] | None) -> set[str]:
    """The flags typed on the command line, as dests ("top_k"), at whatever value."""
    return set(vars(build_parser(defaults=False).parse_args(argv)))


def check_flags(args: argparse.Namespace, typed: set[str]) -> None:
    """Refuse flags that the chosen mode would silently ignore. A typed flag counts at any value,
    its default included: `--num-beams 4 --temperature 0.8` would otherwise look like it did something."""
    check_output_flags(args, typed)  # what is printed: --prompts-file's lines, --explain's table, -n texts, --stream
    check_decoding_flags(args, typed)  # how tokens are chosen: greedy, sampled, or beam search
    if args.seed is not None:  # before any work: --prompts-file draws its batches' seeds from it first
        with flag_words(FLAG_ARGS):
            check_seed(args.seed)


def typed_of(typed: set[str], *dests: str) -> list[str]:
    """Those of `dests` typed, as flags ("--top-k"), in the order given."""
    return ["--" + dest.replace("_", "-") for dest in dests if dest in typed]


def check_output_flags(args: argparse.Namespace, typed: set[str]) -> None:
    """`check_flags` for what is printed: --prompts-file and --batch-size, --explain, --stream and
    --num-return-sequences."""
    if args.prompts_file is not None:
        unused = typed_of(typed, "stream", "explain")
        if unused:
            raise ValueError(f"--prompts-file prints each prompt's texts whole, as one JSON line when its batches are "
                             f"done; it does not take {', '.join(unused)}: give one prompt (--prompt) for {' or '.join(unused)}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    elif "batch_size" in typed:
        raise ValueError("--batch-size sets how many prompts of --prompts-file run at once: it needs --prompts-file")
    if args.explain:
        ignored = typed_of(typed, "num_beams", "stop", "num_return_sequences", "min_new_tokens", "stats", "compile",
                           "sampler", "stream", "length_penalty", "early_stopping", "slide")
        if ignored:
            raise ValueError(f"--explain shows one sampled sequence; it does not take {', '.join(ignored)}")
        if args.max_new_tokens < 1:  # else explain's own error, which names its steps and top, no flags of this command
            raise ValueError(f"--max-new-tokens must be ≥ 1, got {args.max_new_tokens}")
    if args.stream and args.num_return_sequences > 1:
        raise ValueError("--stream prints one text as it is drawn; with --num-return-sequences > 1 drop --stream")
    n, beams = args.num_return_sequences, args.num_beams
    if n < 1 or (beams > 1 and n > beams):
        raise ValueError(f"--num-return-sequences {n} must be in [1, --num-beams {beams}]" if beams > 1 else
                         f"--num-return-sequences must be ≥ 1, got {n}")
    if n > 1 and beams == 1 and args.temperature == 0:
        raise ValueError(f"--temperature 0 is greedy: its {n} texts would be one text {n} times; sample "
                         "(--temperature > 0) or use --num-beams")


def check_decoding_flags(args: argparse.Namespace, typed: set[str]) -> None:
    """`check_flags` for how tokens are chosen: beam search's flags without beams, drawing's flags
    where nothing is drawn (greedy, beams), and what beam search cannot do."""
    beams = args.num_beams
    if beams == 1 and "length_penalty" in typed:
        raise ValueError("--length-penalty scores finished beams: it needs --num-beams > 1")
    if beams == 1 and "early_stopping" in typed:
        raise ValueError("--early-stopping says when beam search ends: it needs --num-beams > 1")
    filters = typed_of(typed, *FILTERS)
    # Greedy takes the most likely token and draws nothing: the filters only shape a draw.
    if filters and beams == 1 and args.temperature == 0:
        them = "it" if len(filters) == 1 else "them"
        raise ValueError(f"--temperature 0 is greedy: it takes the most likely token and draws nothing, so "
                         f"{', '.join(filters)} would do nothing: drop {them} or sample (--temperature > 0)")
    draws_nothing = typed_of(typed, "seed", "sampler")
    if draws_nothing and (beams > 1 or args.temperature == 0):
        mode = "beam search" if beams > 1 else "--temperature 0 (greedy)"
        one = len(draws_nothing) == 1
        raise ValueError(f"{' and '.join(draws_nothing)} {'sets' if one else 'set'} how tokens are drawn, but {mode} "
                         f"draws nothing: drop {'it' if one else 'them'}, or sample (--temperature > 0, --num-beams 1)")
    if beams > 1:
        # Beams are ranked by their log-probabilities as the model gives them (transformers too
        # ignores temperature in beam search): a temperature or a filter would change nothing.
        unused = typed_of(typed, *SAMPLING_DEFAULTS)
        if unused:
            raise ValueError(f"beam search keeps the most likely beams (at temperature 1, unfiltered); it draws nothing, "
                             f"so {', '.join(unused)} would do nothing: drop {'it' if len(unused) == 1 else 'them'} "
                             "or --num-beams")
        if args.stream:  # the best beam is known only at the end
            raise ValueError("beam search picks its best beam only at the end, so there is nothing to --stream: "
                             "drop one of them")
        if args.stop:  # else generate's own error, which names do_sample and streamer, no flags of this command
            raise ValueError("--stop is not supported with beam search (--num-beams > 1): drop --stop, or use "
                             "--num-beams 1")
        if "slide" in typed:  # else generate's own error, in its argument names (slide, num_beams)
            raise ValueError("--slide is not supported with beam search (--num-beams > 1): beam search keeps its beams "
                             "in one context; drop --slide, or use --num-beams 1")


def read_prompts(path: str, output_fields: tuple[str, ...] = ("texts",)) -> tuple[list[dict], list[int]]:
    """--prompts-file → its records and the line each is on. Each line is JSON: a string, or an
    object with a "prompt" string (JSON escapes newlines, so a prompt may hold them); blank lines
    are skipped. A record is the line's object, whose other fields (an "id") come back in the
    output line, or {"prompt": the string}. A line that is neither, or an object that already has
    a field the output line sets (`output_fields`: "texts", and with beams "scores"), is a
    ValueError naming the file and the line. A leading BOM is skipped (read_text_or_stdin)."""
    records, lines = [], []
    # Split at "\n" only: str.splitlines would also split at U+2028 and the like, which a JSON string may hold as they are.
    name = source_name(path)
    for number, line in enumerate(read_text_or_stdin(path).split("\n"), 1):
        if not line.strip(" \t\r\f\v"):  # blank: what the README's restart recipe's grep skips too
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} line {number} is not JSON: {e.msg} (column {e.colno})") from None
        prompt = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(prompt, str):
            shown = line.strip() if len(line.strip()) <= 60 else line.strip()[:57] + "..."
            raise ValueError(f'{name} line {number} is no prompt: expected a JSON string or an object with a "prompt" '
                             f"string, got {shown}")
        taken = [field for field in output_fields if isinstance(item, dict) and field in item]
        if taken:  # the output line's own field: it would be overwritten
            raise ValueError(f'{name} line {number} has a "{taken[0]}" field, which its output line sets to the generated '
                             f'{taken[0]}: rename it')
        records.append(item if isinstance(item, dict) else {"prompt": prompt})
        lines.append(number)
    return records, lines


def too_long(e: PromptTooLong, model: torch.nn.Module, args: argparse.Namespace) -> str:
    """A prompt that leaves no room for --max-new-tokens, in the CLI's words: what would fit instead.
    (`check_room_for_a_prompt` has refused a --max-new-tokens that leaves no room for any prompt: here a
    cut always helps.)"""
    n_positions = model.config.n_positions
    most = n_positions + 1 - e.length  # new tokens this prompt leaves room for
    fewer = f"generate at most {most} token{'s' * (most > 1)}, " if e.length <= n_positions else ""
    last = f"its last {e.room} tokens" if e.room > 1 else "its last token"
    if args.slide:  # the context slides: --max-new-tokens is not what stops the prompt fitting
        return (f"the prompt is {e.length} tokens, but the model's context n_positions={n_positions} must hold the "
                f"whole prompt, even with --slide: shorten it, or keep {last} (--truncate-left)")
    return (f"the prompt is {e.length} tokens, but with --max-new-tokens {args.max_new_tokens} the model's context "
            f"n_positions={n_positions} has room for {e.room}: shorten it, {fewer}or keep {last} (--truncate-left)")


# --prompts-file prints as it goes: the prompts run a window of this many batches at a time (sorted
# by length within it, so that a batch holds prompts of about one length), and each window's lines
# are printed as soon as it is done, so a long run that stops keeps what it printed.
WINDOW_BATCHES = 16


def print_jsonl(model: torch.nn.Module, tokenizer, args: argparse.Namespace, records: list[dict], lines: list[int],
                kwargs: dict, drawn_seed: int | None) -> None:
    """--prompts-file: each prompt's texts as one JSON line on stdout, in the file's order: its record
    with "texts" added (the prompt as the file gives it, before any --truncate-left cut, and the
    line's other fields, so that outputs join back to inputs; `files.json_line`'s strict JSON writes a
    NaN or Infinity that Python read in them as null), a window of prompts at a time;
    --stats per batch and the progress bar on stderr, so stdout stays pure JSON Lines. A `drawn_seed`
    (`draw_seed`) is shown once the prompts are checked, before any batch runs: a run that stops
    early has printed it with its first lines, and it draws them again."""
    prompts = [record["prompt"] for record in records]
    ids = tokenizer.encode_batch(prompts, allowed_special="all")  # the user's own text, as --prompt's
    try:  # every prompt is checked before any runs: a long one at the end fails now, not in an hour
        ids = fit_context(ids, model, args.max_new_tokens, args.truncate_left, args.slide)
    except PromptTooLong as e:
        raise ValueError(f"{source_name(args.prompts_file)} line {lines[e.index]}: {too_long(e, model, args)}") from None
    show_seed(drawn_seed)
    size = args.batch_size * WINDOW_BATCHES
    starts = range(0, len(ids), size)
    n_batches = sum(-(-len(ids[s:s + size]) // args.batch_size) for s in starts)
    done = 0
    # Window w starts from the seed its first batch would get in one generate_texts call over the
    # whole file (batch w·16 of batch_seeds' stream), and generate_texts draws its other batches'
    # seeds from that seed's own stream. Window 0 starts from --seed itself, so a file of up to 16
    # batches draws exactly what one generate_texts call would. (Window w cannot take
    # batch_seeds(seed, windows)[w]: that is the seed window 0's batch w draws with, from the same
    # stream, and a prompt repeated through the file would get the same text in both.)
    seeds = batch_seeds(args.seed, len(starts) * WINDOW_BATCHES)[::WINDOW_BATCHES]
    with progress_bar(total=len(ids), desc="generating", unit="prompt") as bar:
        for start, seed in zip(starts, seeds):
            with flag_words(FLAG_ARGS):
                texts, *scores, stats = generate_texts(model, tokenizer, ids[start:start + size],
                                                       batch_size=args.batch_size,
                                                       num_return_sequences=args.num_return_sequences, progress=bar,
                                                       **{**kwargs, "seed": seed})
            # Beams come with the scores that ranked them, one per text. The window's lines go out now,
            # before its stats and the next window (a kill while they are written may still cut the
            # last one: the README's restart recipe keeps the whole lines first).
            sys.stdout.write("".join(json_line({**record, "texts": texts[i], **({"scores": scores[0][i]} if scores else {})})
                                     + "\n" for i, record in enumerate(records[start:start + size])))
            sys.stdout.flush()
            # Its batches' stats come back with its texts, so they are written now, together (a batch
            # holds prompts of about one length, not the file's order).
            if args.stats:
                for batch_stats in stats:
                    done += 1
                    # tqdm.write, not print: the bar's line has no line end until it closes, so a
                    # printed line would run on from it; this one clears the bar, writes, redraws it.
                    tqdm.write(f"batch {done} of {n_batches}: {batch_stats}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """`minigpt generate`, in the order a failure is cheapest: the flags and prompt files (no model
    loaded yet), the model then its tokenizer (and whether they fit each other), the prompt against
    the context, then one of four outputs: --prompts-file's JSON lines, --explain's table, -n
    samples or --num-beams, or one text (printed whole, or piece by piece with --stream). Exit
    code 0; 2 with one line on stderr for bad input; 130 on Ctrl-C, the text so far kept."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # What needs no model first: a --model that is no checkpoint, a prompt file that cannot be
        # read (or Ctrl-C while `--prompt-file -` waits on standard input).
        check_model_path(args)
        prompt, records, lines = read_prompt_flags(args)
        typed = typed_flags(argv)
        check_flags(args, typed)  # before loading: a flag that would be ignored is refused in no time
        drawn_seed = draw_seed(args)  # sampling without --seed: a seed of our own, shown with the texts
        if args.prompts_file is not None and not records:  # no output, as for any empty input, but said
            print(f"{parser.prog}: note: {source_name(args.prompts_file)} holds no prompts", file=sys.stderr)
            return 0
        model, tokenizer = load_model_and_tokenizer(args, parser.prog)
        check_room_for_a_prompt(model, args, typed)
        sampling, kwargs = generate_kwargs(args)
        if args.prompts_file is not None:  # (its --stats: a line per batch, printed when its window is done)
            with torch.inference_mode():
                print_jsonl(model, tokenizer, args, records, lines, kwargs, drawn_seed)
            return 0
        ids, prompt = fit_prompt(prompt, model, tokenizer, args)
        if args.explain:
            print_explained(model, tokenizer, args, ids, prompt, sampling)
            show_seed(drawn_seed)
            return 0
        stats = print_texts(model, tokenizer, args, ids, prompt, kwargs)
    # OSError: a failed download (DownloadError), a cache it may not write, an unreadable file.
    # MemoryError: a KV cache or a prefill too big for the device (minigpt/kv_cache.py and prefill_decode.py say
    # how big, and what shrinks it).
    except (ValueError, OSError, FloatingPointError, MemoryError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:  # Ctrl-C is how a user stops a long --stream: the text so far stays, no traceback
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command killed by Ctrl-C
    # After the text, as --stats' line: stderr stays empty until the text is out (a run that Ctrl-C
    # or a closed pipe cuts short ends above, without it).
    show_seed(drawn_seed)
    if args.stats:
        sys.stdout.flush()  # the text first, then the stats line
        print(stats, file=sys.stderr)
    return 0


def check_model_path(args: argparse.Namespace) -> None:
    """Refuse a --model that is no checkpoint directory before anything loads: a file, or a path
    that does not exist (with how to fetch GPT-2's weights into it, if it is named after one)."""
    from minigpt.checkpoint import check_checkpoint_dir, download_hint
    from minigpt.config import gpt2_name, shipped_path
    from minigpt.lora import ADAPTER_CONFIG

    model_dir = Path(shipped_path(args.model))  # (README's checkpoints/shakespeare, for an installed minigpt too)
    if model_dir.is_file():  # its config.json, or nanoGPT's ckpt.pt (else: "config.json/config.json not found")
        try:
            check_checkpoint_dir(model_dir)  # names the folder a file is in, or the converter of a pickle
        except NotADirectoryError as e:
            raise ValueError(f"--model {e}") from None
    # A GPT-2 size by name ("gpt2") is no path to check: GPT.from_pretrained finds or fetches it (find_gpt2).
    # A folder of LoRA adapters alone has no config.json: GPT.from_pretrained loads their base (load_adapted).
    adapters = (model_dir / ADAPTER_CONFIG).is_file()
    paths = [] if gpt2_name(model_dir) else [model_dir] if adapters else [model_dir, model_dir / "config.json"]
    for needed in paths:
        if not needed.exists():
            raise ValueError(f"{needed} not found" + (" (the default --model)" if args.model == DEFAULT_MODEL else "")
                             + "; pass --model DIR with config.json and model.safetensors (and vocab.json and "
                               "merges.txt, or pass --tokenizer DIR)"
                             + download_hint(model_dir))


def read_prompt_flags(args: argparse.Namespace) -> tuple[str, list[dict], list[int]]:
    """The prompt (--prompt, or --prompt-file's text), and --prompts-file's records and their lines
    (`read_prompts`). A file missing, a directory, unreadable, not UTF-8, or with a line that is no
    prompt is a ValueError that names its flag. Text typed as a flag (--prompt, --stop) is read as
    UTF-8 whatever the locale (`typed_text`)."""
    if args.prompt is not None:
        args.prompt = typed_text("--prompt", args.prompt)
        warn_file_prompt(args.prompt)
    if args.stop:
        args.stop = [typed_text("--stop", stop) for stop in args.stop]
        if "" in args.stop:  # (generate's own error would show the Python list: ['a', ''])
            raise ValueError(f"--stop '' is empty: a stop string needs at least one character "
                             f"(--stop number {args.stop.index('') + 1} of {len(args.stop)})")
    try:
        prompt = read_text_or_stdin(args.prompt_file) if args.prompt_file else args.prompt
        outputs = ("texts", "scores") if args.num_beams > 1 else ("texts",)
        records, lines = read_prompts(args.prompts_file, outputs) if args.prompts_file is not None else ([], [])
    except (OSError, ValueError) as e:
        flag = "--prompt-file" if args.prompt_file else "--prompts-file"
        raise ValueError(f"cannot read {flag}: {e}") from None
    return prompt, records, lines


def warn_file_prompt(prompt: str) -> None:
    """nanoGPT's sample.py reads --start=FILE:prompt.txt from the file; minigpt's --prompt is the text
    itself, so "FILE:prompt.txt" would be generated from as written. Said when that file exists."""
    path = prompt.removeprefix("FILE:")
    if path != prompt and Path(path).is_file():
        print(f"{prog('generate')}: warning: --prompt {prompt!r} is the text itself; to read {path}, pass "
              f"--prompt-file {path}", file=sys.stderr)


def load_model_and_tokenizer(args: argparse.Namespace, prog: str) -> tuple[GPT, Tokenizer]:
    """--model, then its tokenizer (--tokenizer, or the model's directory), checked to fit each
    other. The model first: a wrong --model (or a classifier) is reported as the model's, not as a
    missing tokenizer. A config whose EOS the model has no row for gets the tokenizer's, with a
    warning on stderr that names the file to fix (`ids_file`: generation_config.json where there is one)."""
    from minigpt.config import ids_file, shipped_path
    from minigpt.evaluate import check_tokenizer_fits
    from minigpt.model import GPT
    from minigpt.tokenizer import model_tokenizer

    model_dir = Path(args.model)
    model = GPT.from_pretrained(model_dir, dtype=args.dtype, device=args.device).eval()
    tokenizer_dir = args.tokenizer or model_dir
    tokenizer = model_tokenizer(model_dir, args.tokenizer)
    cfg = model.config
    check_tokenizer_fits(cfg, tokenizer, model_dir, tokenizer_dir)  # e.g. files copied in from another model
    stale = ", ".join(str(t) for t in cfg.eos_ids if not 0 <= t < cfg.vocab_size)  # of a list, the ids that are no row
    which = "which" if len(cfg.eos_ids) == 1 else f"whose {stale}"
    where = ids_file(Path(shipped_path(model_dir)) / "config.json").name  # (README's checkpoints/..., installed)
    null = "eos_token_id null" if where == "config.json" else \
        "eos_token_id null or left out; the ids come from it, not config.json"
    named = (f"names eos_token_id = {cfg.eos_token_id}, {which} this {cfg.vocab_size}-token model does not have"
             if cfg.eos_ids else f"names no EOS ({null})")
    if cfg.replace_stale_eos(tokenizer.eos_token_id):  # else EOS would never end a text
        print(f"{prog}: warning: {model_dir}/{where} {named}; using the tokenizer's "
              f"({tokenizer.eos_token_id}). Set eos_token_id and bos_token_id in {where} to silence this",
              file=sys.stderr)
    return model, tokenizer


def check_room_for_a_prompt(model: GPT, args: argparse.Namespace, typed: set[str]) -> None:
    """Refuse a --max-new-tokens that leaves no room for any prompt (unless --slide): the model reads
    the prompt (≥ 1 token: an empty one is <|endoftext|>) and every new token but the last, so more
    than n_positions new tokens never fit, nor any cut of a prompt. --slide is offered as a way out
    only where it is taken (not with --explain)."""
    n_positions = model.config.n_positions
    if n_positions - tokens_fed(0, args.max_new_tokens) <= 0 and not args.slide:
        default = "" if "max_new_tokens" in typed else " (the default)"
        slide = "" if args.explain else ", or let the context slide (--slide N)"
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}{default} leaves no room for a prompt in the model's "
                         f"context n_positions={n_positions}: generate at most {n_positions} tokens (after a "
                         f"1-token prompt; the last new token is never fed back){slide}")


def generate_kwargs(args: argparse.Namespace) -> tuple[dict, dict]:
    """The flags as generate's arguments: (sampling, kwargs). `sampling` is the logit processors'
    and the sampler's (all that --explain takes); `kwargs` is everything generate_text, stream_text
    and generate_texts take, beam search's without the temperature and filters (greedy beams)."""
    sampling = {name: getattr(args, name) for name in (*SAMPLING_DEFAULTS, *PENALTIES_OFF, "no_repeat_ngram_size")}
    kwargs = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                  do_sample=args.temperature > 0 and args.num_beams == 1, seed=args.seed, stop=args.stop,
                  num_beams=args.num_beams, length_penalty=args.length_penalty,
                  early_stopping=EARLY_STOPPING[args.early_stopping], compile=args.compile, slide=args.slide,
                  sampler=args.sampler, return_stats=True, **sampling)
    if args.num_beams > 1:
        for name in SAMPLING_DEFAULTS:  # greedy beams: no temperature, no filters
            kwargs.pop(name)
        kwargs["return_scores"] = True  # what ranked the beams, printed beside each
    return sampling, kwargs


def fit_prompt(prompt: str, model: GPT, tokenizer: Tokenizer, args: argparse.Namespace) -> tuple[list[int], str]:
    """The prompt's ids, checked against the context with --max-new-tokens (and cut by
    --truncate-left), and its text as the model continues it (what is printed before the new text)."""
    # The prompt is the user's own text, not untrusted input: "<|endoftext|>" in it is the
    # document boundary GPT-2 was trained with (tiktoken's policy guards text from outside).
    ids = tokenizer.encode(prompt, allowed_special="all")
    try:
        # The model gets the kept ids themselves: their text would not always re-encode to as
        # few tokens (a character cut in half decodes to U+FFFD, 3 bytes of its own).
        kept = fit_context([ids], model, args.max_new_tokens, args.truncate_left, args.slide)[0]
    except PromptTooLong as e:
        raise ValueError(too_long(e, model, args)) from None
    if len(kept) < len(ids):  # --truncate-left cut it
        return kept, tokenizer.decode(kept)
    return ids, prompt


def print_explained(model: GPT, tokenizer: Tokenizer, args: argparse.Namespace, ids: list[int], prompt: str,
                    sampling: dict) -> None:
    """--explain: each step's candidates after every filter (minigpt/explain.py), then the text."""
    from minigpt.explain import explain  # imported here: only --explain needs it

    with torch.inference_mode(), flag_words(FLAG_ARGS):  # generate's errors, named by the flags typed
        text = explain(model, tokenizer, ids, steps=args.max_new_tokens, seed=args.seed, **sampling)
    print(f"\n{prompt}{text}")


def print_texts(model: GPT, tokenizer: Tokenizer, args: argparse.Namespace, ids: list[int], prompt: str,
                kwargs: dict) -> GenerationStats:
    """The texts of one prompt, each after the prompt: -n samples or --num-beams' best beams, each
    under a header when there are several; else one text, printed whole at the end or, with
    --stream, piece by piece. Returns generate's stats."""
    with torch.inference_mode(), flag_words(FLAG_ARGS):  # generate's errors, named by the flags typed
        if args.num_beams > 1 or args.num_return_sequences > 1:
            texts, *scores, stats = generate_text(model, tokenizer, ids, num_return_sequences=args.num_return_sequences,
                                                  **kwargs)
            for i, text in enumerate(texts):
                if len(texts) > 1:
                    print(f"--- beam {i + 1} of {len(texts)} (score {scores[0][i]:.4f}) ---" if scores else
                          f"--- sample {i + 1} of {len(texts)} ---")
                print(prompt + text)
            return stats
        unprinted = [prompt]  # printed with the first piece: nothing is printed if the first step fails

        def show(piece: str) -> None:
            unprinted.append(piece)
            if args.stream:
                print("".join(unprinted), end="", flush=True)
                unprinted.clear()

        try:
            _, stats = run_to_end(stream_text(model, tokenizer, ids, **kwargs), show)
        except KeyboardInterrupt:  # the text so far stays, as with --stream; then main says interrupted
            print("".join(unprinted), end="", flush=True)
            raise
        print("".join(unprinted))
    return stats
