"""Checking `stream`'s arguments before any work: every error names the argument.

Where it sits: minigpt/generation.py's `stream` calls `check_arguments` first, before the decode
loop (or beam search) allocates anything, and reads only the `DecodeArgs` it returns:
`stream(...) → check_arguments → DecodeArgs → [prefill → (sample → decode_step)*]`.

What is checked, and normalised: the model, a minigpt GPT (`check_model`); the prompts' shapes
(`(B, T)` or `(T,)`, at least one row), their left-padding (every row's last slot a token, so one
cache slot serves the batch) and their length against the context limit (`prepare_inputs`;
`context_error` says what would fit); EOS as a list of plain ints (`eos_list`); counts as ints
(minigpt/checks.py's `as_count`, and `check_ngram_size`); `early_stopping` as a bool or "never"
(`check_early_stopping`); and the sampling parameters, each a number or one value per row (`per_row`).
`check_finite` (beam search, --explain) and minigpt/generation.py's `live_rows_finite` /
`raise_if_nonfinite` (the decode loop's form, which waits on the host only every few steps) are the
checks made during decoding: NaN/inf logits are a broken model (or penalty), not a token.

What it does not check: `stop`'s tokenizer (StopStrings does, and `textless_ids` whether it is the
model's, both called by `stream` at the call too).
Warnings, not errors: a model left in training mode (`warn_if_training`, which evaluation calls
too), whose dropout would make every call's tokens differ; settings the decoding mode never reads,
sampling's without sampling (`warn_unused_sampling`) and beam search's without beams
(`warn_unused_beam_settings`), as transformers warns.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from minigpt.checks import as_count, caller_stacklevel, check_flag
from minigpt.config import GPTConfig
from minigpt.penalties import check_penalties
from minigpt.row_params import is_on, per_row, shown
from minigpt.sampling import SAMPLING_DEFAULTS, check_backend, check_sampling_params, check_seed, resolve_backend
from minigpt.stop_strings import stop_list


def prepare_inputs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   max_new_tokens: int, bos: int, slide: int = 0, pad: int | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and lengths; turn empty prompts into <|endoftext|> (GPT-2's convention).
    With no attention_mask, the ids equal to `pad` are padding, as transformers infers (`pad` None:
    none are; the caller passes None when the pad is an EOS, which a prompt may hold as text, or
    when no pad was named)."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a tensor of token ids, (B, T) or (T,); got {type(input_ids).__name__}")
    # Float ids would be truncated without a word (1.7 → token 1), a mask's bools read as ids 1 and 0.
    # An empty torch.tensor([]) is float: allowed.
    if ((input_ids.is_floating_point() or input_ids.is_complex()) and input_ids.numel()) or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor of token ids, got {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):  # a list or NumPy array
        raise TypeError(f"attention_mask must be a tensor (B, T) of 0 (pad) and 1 (token), got "
                        f"{type(attention_mask).__name__}: torch.tensor(mask)")
    if attention_mask is not None and attention_mask.dim() == 1:  # (T,): the mask of one prompt
        attention_mask = attention_mask[None]
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T) or (T,), got shape {tuple(input_ids.shape)}")
    if input_ids.size(0) == 0:  # else torch's "cannot compute aminmax over an empty dimension", below
        raise ValueError(f"input_ids has no rows (shape {tuple(input_ids.shape)}): give at least one prompt (an empty "
                         "one is shape (1, 0)); generate_texts takes a list of prompts that may be empty")
    device = model.transformer.wte.weight.device
    input_ids = input_ids.to(device=device, dtype=torch.long)
    inferred = attention_mask is None and pad is not None  # (its pads said in the error below, if any)
    if attention_mask is None:  # a left-padded batch passed without its mask still decodes as each row alone
        attention_mask = torch.ones_like(input_ids) if pad is None else (input_ids != pad).long()
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, but input_ids has "
                         f"{tuple(input_ids.shape)}: they must match")
    if attention_mask.is_floating_point():  # the cast below would turn 0.5 into 0 without a word
        odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
        if odd.numel():
            raise ValueError(f"attention_mask must hold 0 (padding) or 1 (token), got {odd[0].item():g}")
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    if input_ids.size(1) == 0:  # an empty prompt starts a new document, as GPT-2 was trained
        input_ids = torch.full((input_ids.size(0), 1), start_token(model, bos), dtype=torch.long, device=device)
        attention_mask = torch.ones_like(input_ids)
    empty_rows = attention_mask.sum(-1) == 0
    if empty_rows.any():  # an all-pad row in a batch: give it the <|endoftext|> start in its last slot
        input_ids, attention_mask = input_ids.clone(), attention_mask.clone()
        input_ids[empty_rows, -1], attention_mask[empty_rows, -1] = start_token(model, bos), 1
    # An id outside the embedding table would fail deep inside the model (on a GPU as a device-side
    # assert): one min/max here, a single host sync per call, names it. Pads count: they are embedded too.
    # A mask value other than 0/1 would shift the positions, which count the mask's ones.
    lo, hi, mask_lo, mask_hi, longest = torch.stack([*input_ids.aminmax(), *attention_mask.aminmax(),
                                                     attention_mask.sum(-1).amax()]).tolist()
    if lo < 0 or hi >= model.config.vocab_size:
        raise ValueError(f"input_ids must be in [0, vocab_size={model.config.vocab_size}), got token id "
                         f"{lo if lo < 0 else hi}")
    if mask_lo < 0 or mask_hi > 1:
        raise ValueError(f"attention_mask must hold 0 (padding) or 1 (token), got {mask_lo if mask_lo < 0 else mask_hi}")
    if not attention_mask[:, -1].all():
        raise ValueError("prompts must be left-padded (attention_mask[:, -1] must be 1 in every row): use the "
                         "tokenizer with padding_side='left'" + (f"; with no attention_mask given, the ids equal to "
                         f"pad_token_id {pad} are taken for padding: pass the mask" if inferred else ""))
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    n_positions = model.config.n_positions
    # Positions count a row's own tokens, not its pads (pads take cache slots only), so a batch
    # padded to a fixed length fits as its longest prompt does.
    if longest > prompt_room(max_new_tokens, n_positions, slide):
        raise ValueError(context_error(longest, max_new_tokens, n_positions, slide))
    return input_ids, attention_mask


def check_model(model: torch.nn.Module) -> None:
    """TypeError unless `model` is a minigpt GPT (its config a GPTConfig): generation reads the
    config's fields (eos_ids, n_positions) and calls the model's KV-cache forward, which another
    library's model, transformers' GPT2LMHeadModel say, does not have: it would fail deep inside
    ("'GPT2Config' object has no attribute 'eos_ids'")."""
    config = getattr(model, "config", None)
    if not isinstance(config, GPTConfig):
        of = f" (config {type(config).__name__})" if config is not None else ""
        inside = "" if config is not None else " (or, for a module holding a GPT, pass that GPT)"
        raise TypeError(f"minigpt.generate takes a minigpt GPT, got {type(model).__name__}{of}: load the checkpoint "
                        f"with minigpt.GPT.from_pretrained(dir), which reads transformers' GPT-2 checkpoints too{inside}")


def prompt_room(max_new_tokens: int, n_positions: int, slide: int = 0) -> int:
    """The longest prompt that fits the context with max_new_tokens: the model reads
    prompt + max_new_tokens - 1 tokens (`tokens_fed`); sliding (`slide` > 0), only the prompt must fit."""
    return n_positions if slide else n_positions - tokens_fed(0, max_new_tokens)


def context_error(prompt_len: int, max_new_tokens: int, n_positions: int, slide: int = 0) -> str:
    """Why a prompt and its continuation do not fit the context, with the limits that would: the
    model reads prompt_len + max_new_tokens - 1 tokens (`tokens_fed`), and every prompt has at
    least one (an empty one is <|endoftext|>), so max_new_tokens ≤ n_positions whatever the prompt
    (unless the context slides, `slide`)."""
    cut = "truncate_left=True of generate_text, stream_text and generate_texts, or the CLI's --truncate-left, keeps its last tokens"
    if slide:
        return (f"prompt length {prompt_len} exceeds the model's context n_positions={n_positions}: even when the "
                f"context slides the prompt must fit; shorten it ({cut})")
    fed = (f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} - 1 = {tokens_fed(prompt_len, max_new_tokens)} "
           f"exceeds the model's context n_positions={n_positions} (the last new token is never fed back, so it takes no "
           "position)")
    if max_new_tokens > n_positions:  # no cut of the prompt could help
        this = f", {n_positions + 1 - prompt_len} after this one" if 1 < prompt_len <= n_positions else ""
        return (f"{fed}: max_new_tokens can be at most {n_positions} (after a 1-token prompt{this}); generate fewer "
                "tokens, or let the context slide (slide=N keeps its last N tokens when it is full)")
    with_new = f"with {max_new_tokens} new token{'s' * (max_new_tokens > 1)} a prompt can have at most " \
               f"{n_positions + 1 - max_new_tokens}"
    if prompt_len > n_positions:  # the prompt alone overflows: fewer new tokens cannot help
        return f"{fed}: {with_new}; shorten the prompt ({cut})"
    return (f"{fed}: {with_new}; shorten the prompt ({cut}) or generate fewer "
            f"tokens (at most {n_positions + 1 - prompt_len} with this prompt)")


def start_token(model: torch.nn.Module, bos: int | None) -> int:
    """The token an empty prompt starts from; a model trained with a tokenizer that has no
    <|endoftext|> has none (null in config.json; older checkpoints keep GPT-2's 50256, which its
    vocabulary may not reach)."""
    if bos is None or not 0 <= bos < model.config.vocab_size:
        raise ValueError(f"an empty prompt starts from bos_token_id={bos}, which is no token of this model's "
                         f"{model.config.vocab_size}-token vocabulary (see its config.json): give a prompt")
    return bos


def tokens_fed(prompt_len: int, max_new_tokens: int) -> int:
    """How many tokens the model reads for a prompt and its continuation: the last new token is
    returned, never fed back, so prompt + max_new_tokens - 1 (positions, and cache slots)."""
    return prompt_len + max_new_tokens - 1


def eos_list(model: torch.nn.Module, eos_token_id: int | list[int] | torch.Tensor | None) -> list[int]:
    """The ids that end a row, as plain ints: None is the model's (one id, or the several some
    configs list: `GPTConfig.eos_ids`); one id, or several (a list or a tensor). Plain ints, so
    `token in eos` holds for an int token (a 0-d tensor is never equal to it in a set) and NumPy
    or tensor ids work as transformers' do."""
    if eos_token_id is None:
        return model.config.eos_ids
    if isinstance(eos_token_id, torch.Tensor):
        eos_token_id = eos_token_id.tolist()  # 0-d → an int, (n,) → a list
    if isinstance(eos_token_id, numbers.Integral):
        return [as_count("eos_token_id", eos_token_id)]
    if isinstance(eos_token_id, (str, bytes)) or not hasattr(eos_token_id, "__iter__"):  # 5.0, "5": not ids
        raise TypeError(f"eos_token_id must be an integer or a list of them, got {eos_token_id!r}")
    return [as_count("eos_token_id", t) for t in eos_token_id]


def check_slide(value, n_positions: int, num_beams: int) -> int:
    """`slide` as an int: 0 (off) or the tokens a full context keeps, 1 .. n_positions."""
    value = as_count("slide", value)
    if value and not 1 <= value <= n_positions:
        raise ValueError(f"slide must be 0 (off) or in [1, n_positions={n_positions}], got {value}")
    if value and num_beams > 1:
        raise ValueError("slide is not supported with num_beams > 1: beam search keeps its beams in one context")
    return value


def check_ngram_size(value) -> int:
    """`no_repeat_ngram_size` as an int ≥ 0 (0 = off); one number for every row, as in transformers."""
    value = as_count("no_repeat_ngram_size", value)
    if value < 0:
        raise ValueError(f"no_repeat_ngram_size must be ≥ 0 (0 means off), got {value}")
    return value


def check_early_stopping(value) -> bool | str:
    """`early_stopping` as True, False or "never". Beam search tests `is True` (as transformers
    does), so a NumPy or 0-d tensor boolean becomes a bool here, and 1 or 0 is refused: `1 == True`
    would pass a plain membership test, then act as False."""
    if isinstance(value, (np.bool_, torch.Tensor)) and value.dtype in (np.bool_, torch.bool) and value.ndim == 0:
        return bool(value)
    if not (isinstance(value, bool) or value == "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {value!r}")
    return value


NONFINITE = "the model produced NaN/inf logits (check the weights, dtype and inputs)"
# Penalties can overflow too: a repetition_penalty near 0 divides a seen token's logit (5 / 1e-38 = inf).
PENALTY_OVERFLOW = "a penalty pushed a logit past float range (a repetition_penalty near 0?)"
# An n-gram ban leaves a row no token once it bans all V (n = 1 on a small vocabulary): -inf everywhere.
NGRAM_EXHAUSTED = "no_repeat_ngram_size banned every token of a row (each would repeat an n-gram)"


def textless_ids(model: torch.nn.Module, tokenizer, device: torch.device | str) -> torch.Tensor | None:
    """The model's ids past its tokenizer's vocabulary, or None: a vocabulary padded for faster
    matmuls (nanoGPT pads GPT-2's 50,257 to 50,304) has rows that are no token. Training never
    makes them a target, but their logits stay finite, so a draw can land on one, which the
    tokenizer cannot decode: generation bans them (-inf) when it knows the tokenizer's size.
    Another model's tokenizer is refused, as the text functions refuse it: a smaller one is no
    padded vocabulary of this model's (`GPTConfig.fits_tokenizer`), and banning every id past its
    size would silently confine the model to its first ids."""
    size, V = getattr(tokenizer, "vocab_size", None), model.config.vocab_size
    if not isinstance(size, numbers.Integral):  # (one that only decodes is taken on trust)
        return None
    if why := model.config.tokenizer_mismatch(int(size), getattr(tokenizer, "eos_token_id", None)):
        raise ValueError(f"tokenizer: {why}; pass the model's own tokenizer")
    return torch.arange(int(size), V, device=device) if 0 < size < V else None


def check_finite(logits: torch.Tensor, message: str = NONFINITE) -> None:
    """FloatingPointError if any row of logits (B, V) holds NaN or inf: a broken model (or penalty),
    not a token."""
    # amax propagates NaN, and +inf would make softmax NaN: one reduction checks every row.
    if not torch.isfinite(logits.amax(-1)).all():
        raise FloatingPointError(message)


def warn_unused_sampling(num_beams: int, do_sample: bool, sampling: dict) -> None:
    """UserWarning naming the sampling parameters that the decoding mode ignores, as transformers
    warns: greedy decoding (do_sample=False) and beam search take the most likely tokens, so a
    temperature or a filter set there changes nothing; and temperature=0 is greedy even when
    sampling, so a filter beside it changes nothing either. Not an error, as in transformers (the
    CLI, which knows which flags were typed, refuses them). Set means a number other than the
    parameter's off value, or a tensor (values per row are no accident). Temperature 0 is greedy
    itself, so with do_sample=False it is no contradiction. seed is left out: harmless anywhere."""
    def is_set(name: str) -> bool:
        return is_on(sampling[name], SAMPLING_DEFAULTS[name])
    if num_beams > 1 or not do_sample:
        greedy_temperature = not isinstance(sampling["temperature"], torch.Tensor) and sampling["temperature"] == 0
        unused = [n for n in SAMPLING_DEFAULTS if is_set(n) and not (n == "temperature" and greedy_temperature)]
        mode = (f"beam search (num_beams={num_beams}) keeps the most likely beams" if num_beams > 1 else
                "do_sample=False decodes greedily, taking the most likely token")
        fix = "use num_beams=1 and do_sample=True to sample" if num_beams > 1 else "pass do_sample=True to sample"
    elif not isinstance(sampling["temperature"], torch.Tensor) and sampling["temperature"] == 0:
        unused = [n for n in SAMPLING_DEFAULTS if n != "temperature" and is_set(n)]
        mode, fix = "temperature=0 decodes greedily, taking the most likely token", "use a temperature > 0 to sample"
    else:
        return
    if unused:
        given = ", ".join(shown(n, sampling[n]) for n in unused)
        warnings.warn(f"{mode}, so {given} {'is' if len(unused) == 1 else 'are'} ignored: {fix}, or drop "
                      f"{'it' if len(unused) == 1 else 'them'}", UserWarning, stacklevel=caller_stacklevel())


# Beam search's settings at `stream`'s defaults, which change nothing for one sequence:
# `warn_unused_beam_settings` warns of any other value without beams, and stream_text
# (minigpt/text_generation.py), which streams one sequence, takes only these. Written out here,
# once: generation.py, whose `stream` signature holds the defaults, imports this module, so this
# one cannot read them from there (a test holds the two alike).
BEAM_SETTINGS_OFF = {"length_penalty": 1.0, "early_stopping": False}


def warn_unused_beam_settings(num_beams: int, length_penalty: float, early_stopping: bool | str) -> None:
    """UserWarning naming beam search's settings set without beams (num_beams=1), which nothing then
    reads, as transformers warns "not valid and may be ignored"."""
    given = {"length_penalty": length_penalty, "early_stopping": early_stopping}
    unused = [f"{name}={given[name]!r}" for name, off in BEAM_SETTINGS_OFF.items() if given[name] != off]
    if num_beams == 1 and unused:
        warnings.warn(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for beam search, which num_beams=1 "
                      f"does not run: pass num_beams > 1, or drop {'it' if len(unused) == 1 else 'them'}",
                      UserWarning, stacklevel=caller_stacklevel())

@dataclass
class DecodeArgs:
    """`stream`'s arguments once `check_arguments` has checked them: what the decode loop reads."""

    input_ids: torch.Tensor  # (B, T) on the model's device, left-padded; an empty prompt is <|endoftext|>
    attention_mask: torch.Tensor  # (B, T) 0/1, 1 in every row's last slot
    max_new_tokens: int
    min_new_tokens: int
    num_beams: int
    num_return_sequences: int
    length_penalty: float  # beam search: a finished beam's score is sum_logprobs / length ** this
    early_stopping: bool | str  # beam search: True, False or "never"
    eos: list[int]  # the ids that end a row ([] = none)
    pad: int  # what fills a finished row
    stop: list[str]
    # Who draws each token: None = nobody (greedy: the argmax), else the backend, "torch" or
    # "triton", resolved for the prompts' device; `seed` fixes its draws.
    sampler: str | None
    seed: int | None
    # Each value a number, or one per row (B·copies,): `per_row` spreads a prompt's over its beams or samples.
    sampling: dict  # the filters' parameters by name (minigpt/sampling.py's SAMPLING_DEFAULTS)
    penalties: dict  # repetition_penalty, presence_penalty, frequency_penalty
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this many ids twice in a sequence (0 = off)
    slide: int = 0  # > 0: a full context keeps its last `slide` tokens and decoding goes on (0 = off)
    textless: torch.Tensor | None = None  # ids no step may draw: the model's rows past its tokenizer's (`textless_ids`)


def check_arguments(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                    max_new_tokens, min_new_tokens, do_sample: bool, sampling: dict, penalties: dict,
                    no_repeat_ngram_size, eos_token_id,
                    pad_token_id, stop, num_beams, length_penalty, early_stopping, num_return_sequences, streamer,
                    sampler: str, seed: int | None, slide: int = 0) -> DecodeArgs:
    """Check `stream`'s arguments before any work, and normalise them: counts as ints, EOS as a list,
    the prompts by `prepare_inputs`, the sampling parameters and penalties (each a dict by name: those
    of `SAMPLING_DEFAULTS` and `PENALTIES_OFF`) per row. Errors name the argument. (Stop
    strings and their tokenizer are checked by StopStrings, which `stream` builds at the call too.)"""
    check_model(model)
    check_flag("do_sample", do_sample)  # "False" would sample
    max_new_tokens, min_new_tokens = as_count("max_new_tokens", max_new_tokens), as_count("min_new_tokens", min_new_tokens)
    num_beams, num_return_sequences = as_count("num_beams", num_beams), as_count("num_return_sequences", num_return_sequences)
    cfg = model.config
    eos = eos_list(model, eos_token_id)
    pad_token_id = None if pad_token_id is None else as_count("pad_token_id", pad_token_id)  # 5.0 would fail in the embedding
    seed = None if seed is None else check_seed(seed)
    named_pad = pad_token_id if pad_token_id is not None else cfg.pad_token_id
    stop = stop_list(stop)
    check_sampling_params(**sampling)
    check_penalties(**penalties)
    no_repeat_ngram_size = check_ngram_size(no_repeat_ngram_size)
    check_backend(sampler, "sampler")  # even when decoding greedily, which needs no sampler: a typo is still a typo
    given = ([("eos_token_id", t) for t in eos] if eos_token_id is not None else []) + \
        ([("pad_token_id", pad_token_id)] if pad_token_id is not None else [])
    for name, token in given:  # (the config's own ids are not checked: a small test vocabulary keeps GPT-2's)
        if not 0 <= token < cfg.vocab_size:
            raise ValueError(f"{name} {token} is not a token id of this model: ids are 0 .. {cfg.vocab_size - 1}")
    # The config's own EOS may be no id of the model (GPT-2's 50256 kept by a small vocabulary): no
    # row can draw it, so it ends none; dropped, it is not masked either (min_new_tokens' index_fill).
    eos = [t for t in eos if 0 <= t < cfg.vocab_size]
    # As in transformers: the pad named (this call's pad_token_id, else the config's), else the first
    # EOS; but the first the model has, where the config lists a stale id before it (a row ended by
    # 243 and padded with [60000, 243]'s 60000 would not decode; transformers fails at the embedding).
    # With eos_token_id=[] no id ends a row, but finished rows (stop strings) still need a pad: the
    # config's first EOS, else 0. A stale EOS alone still pads (the model reads it as 0). Only a pad
    # named as one marks padding in prompts.
    own_eos = [t for t in cfg.eos_ids if 0 <= t < cfg.vocab_size]
    pad = named_pad if named_pad is not None else (eos or own_eos or cfg.eos_ids or [0])[0]
    if num_beams < 1:
        raise ValueError(f"num_beams must be ≥ 1, got {num_beams}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real):  # "1" would fail in math.isfinite
        raise TypeError(f"length_penalty must be a number (one for every beam), got {length_penalty!r}")
    if not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty}")
    early_stopping = check_early_stopping(early_stopping)
    # Sampling takes any n ≥ 1; greedy n > 1 would repeat one row n times.
    if not 1 <= num_return_sequences <= (num_beams if num_beams > 1 else (math.inf if do_sample else 1)):
        raise ValueError(f"num_return_sequences={num_return_sequences} must be in [1, num_beams] for beam search, "
                         "1 for greedy decoding, and ≥ 1 for sampling")
    slide = check_slide(slide, cfg.n_positions, num_beams)
    # As transformers: a named pad id that ends no text (no EOS of this call's) marks padding in
    # ids given without a mask; the EOS as pad (GPT-2's default) cannot, since a prompt may hold
    # <|endoftext|> between documents; nor, unlike in transformers (which reads it as padding), can
    # a pad that is the BOS, which may open a prompt. The
    # stand-in pad of a model that names none (its EOS, else 0) only fills finished rows: id 0 is
    # a token like any other.
    pad_marks = None if named_pad is None or named_pad in {*eos, cfg.bos_token_id} else named_pad
    input_ids, attention_mask = prepare_inputs(model, input_ids, attention_mask, max_new_tokens, cfg.bos_token_id, slide,
                                               pad_marks)
    if not 0 <= min_new_tokens <= max_new_tokens:  # after prepare_inputs has checked max_new_tokens itself
        raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")
    # A prompt becomes num_beams rows (beam search) or num_return_sequences rows (n samples).
    copies = num_beams if num_beams > 1 else num_return_sequences
    rows = per_row(input_ids.size(0), copies, **sampling, **penalties)
    if streamer is not None and not callable(streamer):  # else it would fail only after the prefill's work
        raise TypeError(f"streamer must be a function, called with each step's tokens (B,), got {streamer!r}")
    if num_beams > 1 and (do_sample or stop or streamer is not None):
        raise ValueError("beam search here is deterministic: do_sample, stop strings and streamer "
                         "are not supported with num_beams > 1")
    # Temperature 0 (one number for all rows) is greedy even when sampling: the filters act on draws only.
    greedy = not do_sample or (not isinstance(sampling["temperature"], torch.Tensor) and sampling["temperature"] == 0)
    warn_unused_sampling(num_beams, do_sample, sampling)
    warn_unused_beam_settings(num_beams, length_penalty, early_stopping)
    # One this device lacks, or "triton" with a filter the kernel lacks (typical, epsilon, eta): refused here.
    backend = None if greedy else resolve_backend(sampler, input_ids.device, "sampler", sampling)
    return DecodeArgs(input_ids, attention_mask, max_new_tokens, min_new_tokens, num_beams, num_return_sequences,
                      length_penalty, early_stopping, eos, pad, stop, backend, seed,
                      sampling={name: rows[name] for name in sampling}, penalties={name: rows[name] for name in penalties},
                      no_repeat_ngram_size=no_repeat_ngram_size, slide=slide)


def warn_if_training(model: torch.nn.Module, doing: str) -> None:
    """Generation and evaluation are inference. A model left in training mode (as `train_loop` leaves
    it, and `model.train()` sets) drops activations at random there, so its tokens and scores
    change from call to call and differ from transformers'. The call runs as asked, with a warning
    (transformers runs it without one)."""
    if model.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        warnings.warn(f"{doing} with the model in training mode: dropout is on, so results change from call to call; "
                      "call model.eval() first", stacklevel=caller_stacklevel())  # generate → stream → here
