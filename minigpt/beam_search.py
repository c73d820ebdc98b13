"""Beam search: keep the K most likely continuations instead of committing to one token per step.

Where it sits: an alternative to sampling inside the decode loop (`generate(num_beams=K)` lands
here): `ids → prefill → (score every beam × token → keep the best K → reorder the KV cache)* → ids`.
Greedy decoding can walk into a dead end because one early token looked best; beam search keeps
K hypotheses alive and compares whole sequences by their total log-probability.

It follows transformers' (vectorised) beam search exactly, so outputs match token for token:
the same candidate count, the same length penalty, the same three early_stopping modes. It is
deterministic (no sampling), uses minigpt's phases (`prefill`, `decode_step`: minigpt/prefill_decode.py) and static KV cache,
whose rows are reordered in place as beams are picked from their parents.
What it does not do: sampling beams, diverse or constrained beam search, stop strings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.generate_args import check_finite
from minigpt.prefill_decode import DecodeState
from minigpt.sampling import ban_repeated_ngrams, penalize, penalties_on, token_counts
from minigpt.stats import Clock, GenerationStats

NEG_INF_SCORE = -1.0e9  # "impossible" beam score; finite, so sums and comparisons stay well defined


@torch.no_grad()  # as `stream`: no autograd graph through the KV cache
def beam_search(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
    min_new_tokens: int, num_beams: int, length_penalty: float, early_stopping: bool | str, eos: list[int], pad: int,
    num_return_sequences: int, penalties: dict, no_repeat_ngram_size: int = 0, compile: bool = False,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, GenerationStats]:
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
    """
    device, (B, T), V, K = input_ids.device, input_ids.shape, model.config.vocab_size, num_beams
    clock = Clock(device)
    t_start = clock()
    ids = input_ids.repeat_interleave(K, 0)  # (B·K, T): every beam starts as the prompt
    mask = attention_mask.repeat_interleave(K, 0)  # (B·K, T)
    state = DecodeState(model, mask, max_new_tokens, compile)  # B·K rows: its cache holds every beam
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)
    penalized = penalties_on(penalties)

    n_keep = max(2, 1 + len(eos)) * K  # enough candidates that K survive even if K end in EOS
    in_top_k = torch.arange(n_keep, device=device) < K  # only top-K candidates may finish
    # Each beam's ids so far, (B, K, L) with L = T + max_new_tokens.
    running = torch.full((B, K, T + max_new_tokens), pad, dtype=torch.long, device=device)
    running[:, :, :T] = ids.view(B, K, T)  # (B·K, T) → (B, K, T): rows b·K .. b·K + K - 1 are prompt b's
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = NEG_INF_SCORE  # the K beams start identical: let only the first expand
    done_seqs, done_lens = running.clone(), torch.zeros(B, K, dtype=torch.long, device=device)
    done_scores = torch.full((B, K), NEG_INF_SCORE, device=device)
    done = torch.zeros(B, K, dtype=torch.bool, device=device)  # slot holds a finished hypothesis
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device)[:, None] * K  # (B, 1): row of beam 0 of each prompt

    logits = state.prefill(ids)  # (B·K, V)
    t_first = clock()
    for step in range(max_new_tokens):
        cur = T + step
        check_finite(logits)
        logp = F.log_softmax(logits, dim=-1)  # (B·K, V); like transformers, penalties act on log-probs
        if penalized or no_repeat_ngram_size:
            flat = running[:, :, :cur].reshape(B * K, cur)  # (B·K, cur): each beam's ids so far, prompt included
        if penalized:
            logp = penalize(logp, token_counts(flat, V, state.key_valid[:, :cur]),
                            token_counts(flat[:, T:], V), **penalties)
        if no_repeat_ngram_size:  # after the penalties, before the EOS mask: transformers' order
            logp = ban_repeated_ngrams(logp, flat, no_repeat_ngram_size, state.key_valid[:, :cur])
        if step < min_new_tokens and eos:
            logp = logp.index_fill(1, eos_ids, float("-inf"))
        # Score of beam + token, each prompt's K beams side by side: (B, K, V) → (B, K·V), so that
        # index i is beam i // V extending with token i % V.
        total = (logp.view(B, K, V) + running_scores[..., None]).view(B, K * V)
        top_scores, top_idx = total.topk(n_keep, dim=-1)  # (B, n_keep)
        parent, token = top_idx // V, top_idx % V  # (B, n_keep) each: which beam, which token
        cand = running.gather(1, parent[..., None].expand(-1, -1, running.size(-1))).clone()  # (B, n_keep, L)
        cand[:, :, cur] = token
        ends = torch.isin(token, eos_ids) | (step + 1 == max_new_tokens)  # EOS, or out of length

        # Running beams: the best K candidates that did not end.
        cont = top_scores + ends * NEG_INF_SCORE
        pick = cont.topk(K, dim=-1).indices  # (B, K)
        running = cand.gather(1, pick[..., None].expand(-1, -1, cand.size(-1)))  # (B, K, L)
        running_scores, parents = cont.gather(1, pick), parent.gather(1, pick)

        # Finished hypotheses: merge the top-K candidates that ended with those kept so far.
        scores = top_scores / (step + 1) ** length_penalty  # (B, n_keep)
        full = done.all(-1, keepdim=True) & (early_stopping is True)  # no more needed
        scores = scores + (full | ~improvable | ~(ends & in_top_k)) * NEG_INF_SCORE
        merged = torch.cat([done_scores, scores], 1).topk(K, dim=-1).indices  # (B, K) of the K + n_keep
        keep = merged[..., None].expand(-1, -1, cand.size(-1))  # (B, K, L)
        done_seqs = torch.cat([done_seqs, cand], 1).gather(1, keep)  # (B, K + n_keep, L) → (B, K, L)
        done_scores = torch.cat([done_scores, scores], 1).gather(1, merged)
        done_lens = torch.cat([done_lens, torch.full_like(top_idx, step + 1)], 1).gather(1, merged)
        done = torch.cat([done, ends & in_top_k], 1).gather(1, merged)

        # Can a running beam still beat the worst finished one? (transformers' heuristic)
        best_len = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step + 1
        best_running = running_scores[:, :1] / best_len ** length_penalty
        worst_done = torch.where(done, done_scores.min(-1, keepdim=True).values, NEG_INF_SCORE)
        improvable = improvable & (best_running > worst_done).any(-1, keepdim=True)
        if not improvable.any() or (early_stopping is True and done.all()) or ends.all():
            break

        # Each row now continues its parent beam. Only the cache moves: a prompt's beams share its
        # mask and positions, so key_valid and position_ids are the same whichever beam a row holds.
        state.cache.reorder((parents + batch_offset).flatten())
        newest = running[:, :, cur].reshape(B * K, 1)  # (B·K, 1): each beam's latest token
        logits = state.step(newest)

    t_end = clock()
    n = num_return_sequences
    out = done_seqs[:, :n].reshape(B * n, -1)  # (B·n, L): each prompt's n best, one after another
    out = out[:, :T + int(done_lens[:, :n].max())]  # (B·n, T + the longest kept hypothesis)
    if not return_stats:
        return out
    # Beams are candidates, not output: a step advances each of the B prompts by one token.
    return out, GenerationStats.measured(prompt_tokens=int(attention_mask.sum()), new_tokens=B * (step + 1),
                                         first_tokens=B, steps=step, t_start=t_start, t_first=t_first, t_end=t_end,
                                         kv_cache_bytes=state.cache.memory_bytes(), device=device)
