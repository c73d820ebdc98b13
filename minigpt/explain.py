"""The teaching view of sampling (`minigpt generate --explain`): what each filter does to the odds.

Where it sits: it runs the same two phases as `generate` (`prefill`, then one `decode_step` per
token, from minigpt/prefill_decode.py) and, between them, applies minigpt/penalties.py's and
minigpt/sampling.py's stages one at a time instead of fused: `logits → penalties (→ n-gram ban)
→ temperature → top-k → top-p → min-p → typical → epsilon → eta → draw`. After each stage it
keeps the probabilities, so a table per step can show the top candidates' odds before and after
every penalty and filter, and which token was drawn. At temperature 0 it takes the argmax of the
penalized logits, as greedy decoding does (the table stops there: a filter would change nothing,
and is warned of); at any other it samples (Python's `generate` samples only with `do_sample=True`):
the same seed draws the same tokens as `generate(..., do_sample=True, sampler="torch", seed=S)` (the
torch sampler is what `generate` uses off CUDA), until the model's own EOS, where it stops (it takes
no `eos_token_id`).

What it does not do: batches, beam search, stop strings, min_new_tokens or the Triton sampler;
it is one prompt, for reading, and slower than `generate` (every stage is materialized).
"""
from __future__ import annotations

import sys

import torch

from minigpt.checks import as_count
from minigpt.generate_args import (
    NGRAM_EXHAUSTED,
    PENALTY_OVERFLOW,
    check_finite,
    check_model,
    check_ngram_size,
    eos_list,
    prepare_inputs,
    textless_ids,
    warn_unused_sampling,
)
from minigpt.prefill_decode import DecodeState
from minigpt.penalties import ban_repeated_ngrams, check_penalties, penalize, token_counts
from minigpt.sampling import (
    apply_epsilon,
    apply_eta,
    apply_min_p,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    apply_typical_p,
    check_sampling_params,
    check_seed,
    token_picker,
)
from minigpt.text_generation import prompt_ids, tokenizer_ids

COLUMN = 16  # characters a column of the table takes (more for a long stage name)


@torch.no_grad()  # as `stream`: no autograd graph through the KV cache
def explain(model: torch.nn.Module, tokenizer, prompt: str | list[int], *, steps: int, top: int = 5,
            seed: int | None = None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
            typical_p: float = 1.0, epsilon_cutoff: float = 0.0, eta_cutoff: float = 0.0,
            repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
            no_repeat_ngram_size: int = 0, out=None) -> str:
    """The teaching view of sampling: for each step, the top candidates' probabilities after
    every stage (raw → penalties → temperature → top-k → top-p → min-p, then typical, epsilon and eta
    when on), then the token drawn.
    With `no_repeat_ngram_size` > 0 the n-gram ban is a stage of its own, after the penalties.

    It walks the same stages and draws the same way as `generate(..., do_sample=True, sampler="torch")`
    (greedy when temperature is 0).
    `prompt` is text or its token ids (as `stream_text`'s).
    """
    out = out or sys.stdout
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                    epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff)
    penalties = dict(repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                     frequency_penalty=frequency_penalty)
    steps, top, ngram = check_explain_args(model, steps, top, no_repeat_ngram_size, sampling, penalties)
    # Greedy takes the argmax of the penalized logits: a filter beside temperature 0 changes nothing,
    # so its stage is not shown (it would show odds no token is taken by); it is warned of, as generate warns.
    warn_unused_sampling(1, True, sampling)
    # The tokenizer must be the model's, and a config with GPT-2's stale ids (older checkpoints)
    # ends and starts texts at the tokenizer's <|endoftext|>, as the text functions do.
    end, start = tokenizer_ids(model, tokenizer)
    eos = set(eos_list(model, end))
    bos = model.config.bos_token_id if start is None else start
    ids, _ = prepare_inputs(model, prompt_ids(tokenizer, prompt), None, steps, bos)
    T, V = ids.size(1), model.config.vocab_size
    state = DecodeState(model, torch.ones_like(ids), steps)
    generator = torch.Generator(device=ids.device).manual_seed(check_seed(seed)) if seed is not None else None
    # The draw is generate's own per-step function, so a seed draws the same tokens here as there.
    pick = token_picker(1, ids.device, **sampling, generator=generator)
    logits = state.prefill(ids)
    textless = textless_ids(model, tokenizer, ids.device)  # ids the tokenizer has no token for: never drawn, as in generate
    # What can be drawn at all: a vocabulary padded past the tokenizer's (nanoGPT's 50,304) has ids
    # that are no token, banned before the "raw" column, and not counted as filtered away.
    tokens = V - (0 if textless is None else textless.numel())
    new: list[int] = []
    for step in range(steps):
        check_finite(logits)  # a broken model's NaN would fill the tables and still "draw" a token
        if textless is not None:
            logits = logits.index_fill(1, textless, float("-inf"))
        seen = token_counts(ids, V)
        generated = token_counts(ids[:, T:], V)
        stages = [("raw", logits)]
        stages.append(("penalties", penalize(logits, seen, generated, **penalties)))
        check_finite(stages[-1][1], f"NaN/inf logits after the penalties: {PENALTY_OVERFLOW}")
        if ngram:  # shown only when on: a column that never changes anything would only widen the table
            stages.append((f"no-repeat {ngram}", ban_repeated_ngrams(stages[-1][1], ids, ngram)))
            check_finite(stages[-1][1], f"every token is -inf after the n-gram ban: {NGRAM_EXHAUSTED}")
        penalized = stages[-1][1]  # what greedy takes the argmax of, and the filters start from
        if temperature > 0:
            # Each value as given (0.9999999 is no "1"): str is a float's shortest exact form.
            stages.append((f"temperature {temperature}", apply_temperature(stages[-1][1], temperature)))
            stages.append((f"top-k {top_k}", apply_top_k(stages[-1][1], top_k)))
            stages.append((f"top-p {top_p}", apply_top_p(stages[-1][1], top_p)))
            stages.append((f"min-p {min_p}", apply_min_p(stages[-1][1], min_p)))
            # The filters after min-p, each shown only when on, as the n-gram ban: the table is wide enough.
            for name, value, on, f in (("typical", typical_p, typical_p < 1, apply_typical_p),
                                       ("epsilon", epsilon_cutoff, epsilon_cutoff > 0, apply_epsilon),
                                       ("eta", eta_cutoff, eta_cutoff > 0, apply_eta)):
                if on:
                    stages.append((f"{name} {value}", f(stages[-1][1], value)))
        final = stages[-1][1]
        token = int(pick(penalized)[0])  # from the penalized logits, as generate's step: filters and draw
        probs = [s.softmax(-1)[0] for _, s in stages]
        banned = "" if tokens == V else f" ({V - tokens} ids of the model's {V} are no token, never drawn)"
        kept = "greedy (temperature 0): took the most likely" if temperature == 0 else \
            f"{int(torch.isfinite(final).sum())} of {tokens} tokens kept{banned}; drew"
        print(f"\nstep {step}: {kept} {token_label(tokenizer, token)}", file=out)
        widths = [max(COLUMN, len(name) + 2) for name, _ in stages]  # a long name keeps a space before it
        print(f"  {'token':<{COLUMN - 1}}" + "".join(f"{name:>{w}}" for (name, _), w in zip(stages, widths)), file=out)
        # The candidates: the most likely before any stage, then after the last, then the token drawn.
        cands = top_ids(stages[0][1][0], top) + top_ids(final[0], top) + [token]
        for cand in dict.fromkeys(cands):
            mark = "→" if cand == token else " "
            # A dropped token (-inf: filtered away) is "-", not a kept one's 0.0000 below 5e-5.
            row = "".join(f"{'-' if s[0, cand] == float('-inf') else f'{p[cand].item():.4f}':>{w}}"
                          for (_, s), p, w in zip(stages, probs, widths))
            print(f"{mark} {token_label(tokenizer, cand):<{COLUMN - 1}}{row}", file=out)
        if token in eos:  # any of them, where config.json lists several
            break  # the table shows it; the text ends silently, as generate's does
        new.append(token)
        if step + 1 == steps:
            break
        ids = torch.cat([ids, torch.tensor([[token]], device=ids.device)], 1)
        logits = state.step(ids[:, -1:])
    return tokenizer.decode(new)


def top_ids(logits: torch.Tensor, top: int) -> list[int]:
    """The ids of the `top` largest logits (V,), less those at -inf: a filter may keep fewer than
    `top`, and an id that is no token never has a row (topk would fill up with either)."""
    return [i for i in torch.topk(logits, top).indices.tolist() if logits[i] > float("-inf")]


def token_label(tokenizer, token: int) -> str:
    """A candidate's label: its text, quoted; or, for a token that holds part of a UTF-8 character
    (which decodes alone as '�', as do the others that hold such parts), its bytes: b'\\xf0\\x9f\\x98'."""
    text = tokenizer.decode([token])
    if "\ufffd" in text and hasattr(tokenizer, "decode_bytes"):
        raw = tokenizer.decode_bytes([token])
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw)
    return repr(text)


def check_explain_args(model: torch.nn.Module, steps, top, no_repeat_ngram_size, sampling: dict,
                       penalties: dict) -> tuple[int, int, int]:
    """`explain`'s arguments checked before any work, as `stream` checks its own, each error naming
    the argument: returns (steps, top, the n-gram size) as ints. `sampling` and `penalties` hold
    the parameters by name, one number each."""
    check_model(model)  # another library's model (transformers') would fail deep inside, on its config
    for name, value in {**sampling, **penalties}.items():  # a (B,) tensor: `temperature > 0` would fail
        if isinstance(value, torch.Tensor):
            raise TypeError(f"explain takes one number per parameter (it runs one prompt), got a tensor for {name}")
    steps, top = as_count("steps", steps), as_count("top", top)
    if steps < 1 or top < 1:  # top = 0 or -1 would fail in torch.topk ("selected index k out of range")
        raise ValueError(f"steps and top must be ≥ 1, got steps={steps}, top={top}")
    check_sampling_params(**sampling)
    check_penalties(**penalties)
    # A top past the vocabulary shows every token.
    return steps, min(top, model.config.vocab_size), check_ngram_size(no_repeat_ngram_size)
