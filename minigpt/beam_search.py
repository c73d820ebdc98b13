"""Beam search: keep the K most likely continuations instead of committing to one token per step.

Where it sits: an alternative to sampling inside the decode loop (`generate(num_beams=K)` lands
here): `ids → prefill → (score every beam × token → keep the best K → reorder the KV cache)* → ids`.
Greedy decoding can walk into a dead end because one early token looked best; beam search keeps
K hypotheses alive and compares whole sequences by their total log-probability.

It follows transformers' (vectorised) beam search exactly, so outputs match token for token:
the same candidate count, the same length penalty, the same three early_stopping modes. It is
deterministic (no sampling), uses minigpt's phases (`prefill`, `decode_step`: minigpt/prefill_decode.py) and static KV cache,
whose rows are reordered in place as beams are picked from their parents.
It returns the hypotheses' ids, best first, and on request (`return_scores`) their scores, as
transformers' `sequences_scores`. What it does not do: sampling beams, diverse or constrained beam
search, stop strings.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from minigpt.generate_args import NGRAM_EXHAUSTED, check_finite
from minigpt.prefill_decode import DecodeState
from minigpt.penalties import ban_repeated_ngrams, penalize, penalties_on, token_counts
from minigpt.stats import LoopTimer

NEG_INF_SCORE = -1.0e9  # "impossible" beam score; finite, so sums and comparisons stay well defined


class Finished(NamedTuple):
    """Each prompt's K best finished hypotheses so far, best first: (B, K, ...) each."""

    seqs: torch.Tensor  # (B, K, L) long: prompt + new tokens, pads after
    scores: torch.Tensor  # (B, K): sum_logprobs / new_length ** length_penalty; NEG_INF_SCORE in empty slots
    lens: torch.Tensor  # (B, K) long: new tokens, the EOS included
    done: torch.Tensor  # (B, K) bool: the slot holds a hypothesis, leftovers included (transformers' flag)
    real: torch.Tensor  # (B, K) bool: ... and it is no leftover: a live beam's, allowed to finish

    @staticmethod
    def none_yet(seqs: torch.Tensor) -> "Finished":
        """No hypothesis finished: K empty slots per prompt, shaped after the beams' ids `seqs` (B, K, L)."""
        B, K = seqs.shape[:2]
        no = torch.zeros(B, K, dtype=torch.bool, device=seqs.device)
        return Finished(seqs.clone(), torch.full((B, K), NEG_INF_SCORE, device=seqs.device),
                        torch.zeros(B, K, dtype=torch.long, device=seqs.device), no, no.clone())

    def admit(self, cand: torch.Tensor, top_scores: torch.Tensor, ended: torch.Tensor, improvable: torch.Tensor,
              new_len: int, length_penalty: float, early_stopping: bool | str) -> "Finished":
        """The top-K candidates that ended (`ended`, (B, n_keep)) join the finished hypotheses, scored
        by their total log-probability `top_scores` / new_len ** length_penalty, unless their prompt
        needs no more (early_stopping=True and K finished) or can no longer improve (`improvable`, (B, 1))."""
        full = self.done.all(-1, keepdim=True) & (early_stopping is True)
        may_finish = ended & ~full & improvable
        scores = top_scores / new_len ** length_penalty  # (B, n_keep)
        # transformers counts every top-K candidate that ended as finished, even a dead beam's (score
        # about -1e9: one of the K - 1 copies of the prompt at step 0, or a beam kept running for want
        # of live ones), whose tokens repeat a live beam's or were never chosen. We count them too,
        # for its stopping rules, but mark them: they are leftovers, never a result.
        real = may_finish & (top_scores > NEG_INF_SCORE / 2)
        return self.merge(cand, scores + ~may_finish * NEG_INF_SCORE, new_len, ended, real)

    def merge(self, cand: torch.Tensor, scores: torch.Tensor, new_len: int, ends: torch.Tensor,
              real: torch.Tensor) -> "Finished":
        """Keep the K best of the finished hypotheses and the candidates `cand` (B, N, L) that
        just ended (`ends`, (B, N)), whose `scores` already carry NEG_INF_SCORE where they may not
        finish; `real` (B, N) marks those that are no leftovers."""
        merged = torch.cat([self.scores, scores], 1).topk(self.scores.size(1), dim=-1).indices  # (B, K) of the K + N
        return Finished(
            seqs=torch.cat([self.seqs, cand], 1).gather(1, merged[..., None].expand(-1, -1, cand.size(-1))),
            scores=torch.cat([self.scores, scores], 1).gather(1, merged),
            lens=torch.cat([self.lens, torch.full_like(scores, new_len, dtype=torch.long)], 1).gather(1, merged),
            done=torch.cat([self.done, ends], 1).gather(1, merged),
            real=torch.cat([self.real, real], 1).gather(1, merged),
        )


def next_log_probs(logits: torch.Tensor, beam_ids: torch.Tensor, prompt_len: int, key_valid: torch.Tensor, *,
                   penalties: dict, no_repeat_ngram_size: int, banned_eos: torch.Tensor | None,
                   textless: torch.Tensor | None = None) -> torch.Tensor:
    """What each beam may say next: logits (B·K, V) → log-probs (B·K, V), over the ids with a token
    (`textless`: those without), after the penalties, the n-gram ban and the EOS mask of
    min_new_tokens (`banned_eos`), in transformers' order.
    beam_ids (B·K, cur): each beam's ids so far, prompt included; key_valid (B·K, cur): not a pad."""
    check_finite(logits)
    if textless is not None:  # before the log-softmax: the beams' odds are over the tokens there are
        logits = logits.index_fill(1, textless, float("-inf"))
    logp = F.log_softmax(logits, dim=-1)  # like transformers, penalties act on log-probs
    if penalties_on(penalties):
        logp = penalize(logp, token_counts(beam_ids, logits.size(-1), key_valid),
                        token_counts(beam_ids[:, prompt_len:], logits.size(-1)), **penalties)
    if no_repeat_ngram_size:
        logp = ban_repeated_ngrams(logp, beam_ids, no_repeat_ngram_size, key_valid)
    if banned_eos is not None:
        logp = logp.index_fill(1, banned_eos, float("-inf"))
    return logp


@torch.no_grad()  # as `stream`: no autograd graph through the KV cache
def beam_search(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
    min_new_tokens: int, num_beams: int, length_penalty: float, early_stopping: bool | str, eos: list[int], pad: int,
    num_return_sequences: int, penalties: dict, no_repeat_ngram_size: int = 0, compile: bool = False,
    return_scores: bool = False, return_stats: bool = False, textless: torch.Tensor | None = None,
) -> torch.Tensor | tuple:
    """Keep the `num_beams` most likely continuations per prompt; transformers' semantics.

    Each step every beam proposes every token; the best 2·K candidates (K = num_beams; more with
    several EOS ids) are ranked by total log-probability. Candidates ending in EOS among the top K
    become finished hypotheses, scored sum_logprobs / new_length ** length_penalty (> 0 favours
    longer ones); the best K others keep running. The KV cache follows: row b of the next step
    continues from its parent beam, so the cache is reordered by parent (`KVCache.reorder`).
    It stops when no running beam can beat the finished ones: with early_stopping=True as soon
    as K hypotheses are finished, with False when the best running score at the current length can't
    beat the worst finished one, with "never" when even the best length can't.
    `penalties` are numbers or (B·K,) tensors, one value per beam (`per_row` with copies=K).
    `no_repeat_ngram_size` > 0 bans, per beam, the tokens that would repeat an n-gram of that beam's ids.
    `textless` (ids, or None): ids no beam may take, the model's rows past its tokenizer's vocabulary.
    A prompt whose beams all run out of tokens (the ban, a penalty) before `num_return_sequences`
    hypotheses end is a FloatingPointError, not rows of leftovers.
    The result: the ids (B·n, T + new), each prompt's n best one after another; then, with
    `return_scores`, their scores (B·n,) float (each the total log-probability of its new tokens,
    after the penalties, / new_length ** length_penalty: what ranked it), and with `return_stats`
    the GenerationStats.
    """
    device, (B, T), V, K = input_ids.device, input_ids.shape, model.config.vocab_size, num_beams
    timer = LoopTimer(device)
    ids = input_ids.repeat_interleave(K, 0)  # (B·K, T): every beam starts as the prompt
    state = DecodeState(model, attention_mask.repeat_interleave(K, 0), max_new_tokens, compile)  # its cache holds every beam
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)
    # Enough candidates that K survive even if K end in EOS; no more than the K·V there are (a tiny
    # vocabulary whose every id is an EOS: then every candidate ends).
    n_keep = min(max(2, 1 + len(eos)) * K, K * V)
    in_top_k = torch.arange(n_keep, device=device) < K  # only top-K candidates may finish
    # Each beam's ids so far, (B, K, L) with L = T + max_new_tokens: rows b·K .. b·K + K - 1 of `ids` are prompt b's.
    running = torch.cat([ids, torch.full((B * K, max_new_tokens), pad, dtype=torch.long, device=device)], 1).view(B, K, -1)
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = NEG_INF_SCORE  # the K beams start identical: let only the first expand
    finished = Finished.none_yet(running)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device)[:, None] * K  # (B, 1): row of beam 0 of each prompt

    logits = state.prefill(ids)  # (B·K, V)
    for step in range(max_new_tokens):
        cur = T + step
        logp = next_log_probs(logits, running[:, :, :cur].reshape(B * K, cur), T, state.key_valid[:, :cur],
                              penalties=penalties, no_repeat_ngram_size=no_repeat_ngram_size,
                              banned_eos=eos_ids if step < min_new_tokens and eos else None, textless=textless)
        top_scores, parent, cand = best_candidates(logp.view(B, K, V), running, running_scores, n_keep, cur)
        ends = torch.isin(cand[:, :, cur], eos_ids) | (step + 1 == max_new_tokens)  # (B, n_keep): an EOS, or out of length
        running, running_scores, parents = best_running(cand, top_scores, parent, ends, K)
        finished = finished.admit(cand, top_scores, ends & in_top_k, improvable, step + 1, length_penalty, early_stopping)
        improvable = improvable & can_improve(running_scores, finished, step + 1, max_new_tokens, length_penalty,
                                              early_stopping)
        if step == 0:  # TTFT: prefill and the first token's choice, as sampling times it
            timer.first_token()
        if not improvable.any() or (early_stopping is True and finished.done.all()) or ends.all():
            break
        # Each row now continues its parent beam. Only the cache moves: a prompt's beams share its
        # mask and positions, so key_valid and position_ids are the same whichever beam a row holds.
        state.cache.reorder((parents + batch_offset).flatten())
        logits = state.step(running[:, :, cur].reshape(B * K, 1))  # (B·K, 1): each beam's latest token

    timer.stop()
    n = num_return_sequences
    check_enough_hypotheses(finished, n, V, max_new_tokens, no_repeat_ngram_size, penalties)
    out = finished.seqs[:, :n].reshape(B * n, -1)  # (B·n, L): each prompt's n best, one after another
    out = out[:, :T + int(finished.lens[:, :n].max())]  # (B·n, T + the longest kept hypothesis)
    result = (out, finished.scores[:, :n].reshape(B * n)) if return_scores else (out,)
    if not return_stats:
        return result if return_scores else out
    # Beams are candidates, not output: a step advances each of the B prompts by one token.
    return *result, timer.stats(prompt_tokens=int(attention_mask.sum()), new_tokens=B * (step + 1), first_tokens=B,
                                steps=step, kv_cache_bytes=state.cache.memory_bytes(), device=device)


def best_candidates(logp: torch.Tensor, running: torch.Tensor, running_scores: torch.Tensor, n_keep: int,
                    cur: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every beam proposes every token; keep each prompt's best n_keep by total log-probability.

    logp (B, K, V): each beam's next-token log-probs; running (B, K, L): the beams' ids, `cur` of
    them so far; running_scores (B, K): their totals. Returns each candidate's total (B, n_keep),
    its parent beam (B, n_keep) and its ids (B, n_keep, L): the parent's, then the new token at `cur`.
    """
    B, K, V = logp.shape
    # Beam + token side by side: (B, K, V) → (B, K·V), so index i is beam i // V extending with token i % V.
    total = (logp + running_scores[..., None]).view(B, K * V)
    top_scores, top_idx = total.topk(n_keep, dim=-1)  # (B, n_keep)
    parent, token = top_idx // V, top_idx % V  # (B, n_keep) each: which beam, which token
    cand = running.gather(1, parent[..., None].expand(-1, -1, running.size(-1))).clone()  # (B, n_keep, L)
    cand[:, :, cur] = token
    return top_scores, parent, cand


def best_running(cand: torch.Tensor, top_scores: torch.Tensor, parent: torch.Tensor, ends: torch.Tensor,
                 K: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The beams that run on: the best K candidates that did not end (`ends`, (B, n_keep)).
    Returns their ids (B, K, L), their totals (B, K) and their parent beams (B, K)."""
    cont = top_scores + ends * NEG_INF_SCORE  # an ended candidate ranks below every running one
    pick = cont.topk(K, dim=-1).indices  # (B, K)
    return cand.gather(1, pick[..., None].expand(-1, -1, cand.size(-1))), cont.gather(1, pick), parent.gather(1, pick)


def can_improve(running_scores: torch.Tensor, finished: Finished, new_len: int, max_new_tokens: int,
                length_penalty: float, early_stopping: bool | str) -> torch.Tensor:
    """(B, 1) bool: can a prompt's best running beam still beat its worst finished hypothesis?
    transformers' heuristic: the best beam's score now (new_len), or, with early_stopping="never"
    and a length penalty that favours length, at the longest length it could reach."""
    best_len = max_new_tokens if early_stopping == "never" and length_penalty > 0 else new_len
    best_now = running_scores[:, :1] / best_len ** length_penalty
    worst_done = torch.where(finished.done, finished.scores.min(-1, keepdim=True).values, NEG_INF_SCORE)
    return (best_now > worst_done).any(-1, keepdim=True)


def check_enough_hypotheses(finished: Finished, n: int, V: int, max_new_tokens: int, no_repeat_ngram_size: int,
                            penalties: dict) -> None:
    """FloatingPointError if a prompt has fewer than n real hypotheses to return, naming the causes.

    A slot to return that holds no real hypothesis: the prompt's beams ran out of tokens (all
    -inf) or of distinct continuations before n hypotheses ended, so it would return leftovers
    (transformers does, scored -1e9 or -1e9 / length ** length_penalty). As in greedy decoding,
    that is an error; a prompt that was done before its beams ran out is not.
    """
    empty = ~finished.real[:, :n].all(-1)  # (B,)
    if not bool(empty.any()):
        return
    causes = [f"{NGRAM_EXHAUSTED}, or left fewer than {n} distinct continuations"] * bool(no_repeat_ngram_size)
    causes += ["a penalty pushed every token's log-probability to -inf"] * penalties_on(penalties)
    if V ** min(max_new_tokens, 64) < n:
        causes.append(f"a vocabulary of {V} has fewer than num_return_sequences={n} continuations of "
                      f"max_new_tokens={max_new_tokens}")
    # Else the tokens that end a hypothesis left too few to go on (a tiny vocabulary, most of it EOS ids).
    causes = causes or [f"fewer than {n} distinct hypotheses could be made before every beam ended: ask for fewer "
                        "(num_return_sequences)"]
    raise FloatingPointError(f"beam search found fewer than {n} {'hypothesis' if n == 1 else 'hypotheses'} for "
                             f"prompt {int(empty.int().argmax())}: {', or '.join(causes)}")
