"""The KV cache: every layer's keys and values of the tokens seen so far, kept for the next step.

Where it sits: inside the `KV-cache decode loop`, held by minigpt/prefill_decode.py's
`DecodeState` (which the loop in minigpt/generation.py, beam search and --explain drive). Without a cache, making
token t+1 would re-run the whole model over all t earlier tokens, every step, only to rebuild
their keys and values at every layer. Those never change (a token only attends backwards), so
we compute each once, store it here, and each decode step feeds the model just one new token per
row: the new token's query attends over the stored keys and values.

The cache is *static*: allocated once, for the whole generation, per layer K and V of shape
(B, H, max_len, D) in the model's dtype and device. A step writes its new k/v at slots
`input_pos` and attention reads the buffers back. Static buffers mean no reallocation or
`torch.cat` per token, and fixed shapes, which `torch.compile` and CUDA graphs (a recorded
sequence of GPU launches, replayed at one launch's cost: prefill_decode.decode_step_for) need.

Reading: attention reads the first S slots, S = the width of the attention mask it is given.
The eager decode loop passes S = slots filled so far (a step count the host knows, so no sync),
so a step costs O(current length), not O(max_len). The compiled step passes S = max_len every
step, so its shapes never change; the mask hides the slots not yet written. `max_len` is rounded
up to a bucket (`cache_length`), so prompts of similar length share one compiled graph.

Memory: 2 (K and V) × n_layer × B × max_len × n_embd × bytes per element.
What it does not do: paging, sliding windows, or sharing a prompt's cache between requests.
There is no API to clone or roll back a cache; by hand, outside what minigpt supports or tests:
clone with `copy.deepcopy(cache)` (to share a prompt's prefill between continuations); rolling back
is `prefill_decode.DecodeState`'s to do (its docstring says how), as it counts the slots filled.
"""
from __future__ import annotations

import torch

from minigpt.checks import is_out_of_memory

# Buckets start at one 64-slot block, then double: few distinct shapes (few compiled graphs);
# past 64 slots, at most 2× the slots actually needed.
MIN_BUCKET = 64


def cache_length(needed: int, n_positions: int) -> int:
    """Slots to allocate for `needed` tokens: the next power of two ≥ 64, capped at the context.

    Slots are not positions: left pads take slots but no positions, so a padded batch may need
    more slots than the context has positions (each row's own tokens still fit in the context,
    which minigpt/generate_args.py checks). Such a batch gets the slots it needs rounded up to a
    multiple of 64: still a bucket, so batches padded to a fixed width share a compiled step while
    their max_new_tokens stay within the same 64 slots (exactly the slots needed compiled a step
    for every max_new_tokens)."""
    if needed > n_positions:
        return -(-needed // MIN_BUCKET) * MIN_BUCKET
    length = MIN_BUCKET
    while length < needed:
        length *= 2
    return min(length, n_positions)


class LayerKV:
    """One layer's K and V buffers, each (B, H, max_len, D)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this call's k, v (B, H, T, D) at slots `input_pos`; return the full buffers.

        `input_pos` (T,) is shared by every row: prompts are left-padded, so each row's newest
        token sits in the same slot. Writes are in place: the buffers keep their address.
        """
        # Under autocast the projections come out in its dtype (bf16) while the buffers keep the
        # weights' (fp32): store in the buffers' dtype.
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))  # k_buf[:, :, input_pos[t]] = k[:, :, t]
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v  # (B, H, max_len, D) each


def _too_big(n_layer: int, shape: tuple[int, int, int, int], dtype: torch.dtype,
             device: torch.device | str | None) -> MemoryError:
    """The error for a cache its device could not allocate: its size, and what makes it smaller."""
    batch_size, n_head, max_len, head_dim = shape
    size = 2 * n_layer * batch_size * n_head * max_len * head_dim * dtype.itemsize
    return MemoryError(
        f"the KV cache does not fit: {batch_size:,} rows × {max_len:,} slots × {n_layer} layers × K and V × "
        f"{n_head * head_dim} channels in {str(dtype).removeprefix('torch.')} is {size / 2**30:,.1f} GiB, which "
        f"{torch.device(device or 'cpu')} could not allocate; generate fewer rows at once (batch size, "
        "num_return_sequences, num_beams) or fewer tokens (max_new_tokens)"
        + (", or in bfloat16" if dtype.itemsize > 2 else ""))


class KVCache:
    """Static per-layer K/V buffers for a batch of `batch_size` rows and `max_len` slots."""

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        if n_layer < 1:  # a model has a block at least (GPTConfig refuses 0); a cache of none would hold nothing
            raise ValueError(f"n_layer must be at least 1 (the cache holds each layer's K and V), got {n_layer}")
        shape = (batch_size, n_head, max_len, head_dim)
        # Zeros, not `empty`: unwritten slots are masked out, but attention still multiplies them
        # by a weight of 0, and 0 × (garbage NaN) would be NaN.
        try:
            self.layers = [LayerKV(torch.zeros(shape, dtype=dtype, device=device),
                                   torch.zeros(shape, dtype=dtype, device=device)) for _ in range(n_layer)]
        except RuntimeError as e:  # torch.OutOfMemoryError on a GPU; the CPU allocator's "can't allocate memory"
            if not is_out_of_memory(e):
                raise
            raise _too_big(n_layer, shape, dtype, device) from None
        self.max_len = max_len

    # What the cache is, read from a buffer rather than kept beside it: the buffer knows its real
    # device ("cuda" allocates on cuda:0). Every layer's K and V alike: (B, H, max_len, D).
    @property
    def batch_size(self) -> int:
        """The rows it holds (B)."""
        return self.layers[0].k.size(0)

    @property
    def device(self) -> torch.device:
        """Where its buffers are."""
        return self.layers[0].k.device

    def layout(self) -> dict:
        """What a model must match to use this cache: all but the rows and slots."""
        k = self.layers[0].k  # (B, H, max_len, D)
        return dict(n_layer=len(self.layers), n_head=k.size(1), head_dim=k.size(3), dtype=k.dtype, device=k.device)

    @staticmethod
    def layout_for(model: torch.nn.Module) -> dict:
        """The layout `model` (a minigpt GPT) needs: its config's layers and heads, in the dtype and
        on the device of its weights (`for_model` builds a cache of it, `check_fits` compares)."""
        c, w = model.config, model.transformer.wte.weight
        return dict(n_layer=c.n_layer, n_head=c.n_head, head_dim=c.head_dim, dtype=w.dtype, device=w.device)

    def __repr__(self) -> str:
        # What the cache holds, not where it sits in memory. How many slots are filled is the
        # decode loop's count (prefill_decode.DecodeState), not the cache's.
        d = self.layout()
        return (f"KVCache(n_layer={d['n_layer']}, batch_size={self.batch_size}, n_head={d['n_head']}, "
                f"max_len={self.max_len}, head_dim={d['head_dim']}, dtype={str(d['dtype']).removeprefix('torch.')}, "
                f"device={d['device']})")

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int) -> "KVCache":
        """A cache shaped for `model` (a minigpt GPT), in the dtype and on the device of its weights.
        Shaped by the config, so first `model.check_config()` refuses a config its modules disagree
        with (a block appended without raising n_layer, n_head changed on one side only), by name,
        here: once per generation, not at each decode step (where `check_fits` compares only the
        cache's layout with the model's, which costs little)."""
        model.check_config()
        return cls(batch_size=batch_size, max_len=max_len, **cls.layout_for(model))

    def check_fits(self, model: torch.nn.Module) -> None:
        """Refuse a cache built for another model (other layers, heads, head size, dtype or device)
        here, by name: otherwise it fails deep in attention, or, with more layers than the model, runs.
        Reads only shapes and dtypes, which the host knows: no wait for the device. Under autocast
        the cache may also be in autocast's dtype (an fp32 model's K and V come out in it, and
        `LayerKV.update` casts into the buffer's dtype anyway)."""
        want, have = self.layout_for(model), self.layout()
        wrong = [name for name in want if want[name] != have[name]]
        device = have["device"].type
        if wrong == ["dtype"] and torch.is_autocast_enabled(device) and have["dtype"] == torch.get_autocast_dtype(device):
            return
        if wrong:
            def show(d: dict) -> str:
                return ", ".join(f"{name}={str(d[name]).removeprefix('torch.')}" for name in wrong)

            raise ValueError(f"kv_cache does not fit this model: the cache has {show(have)}, the model needs {show(want)}; "
                             "build it with KVCache.for_model(model, batch_size, max_len)")

    def layer(self, i: int) -> LayerKV:
        return self.layers[i]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Beam search: row b now continues from row beam_idx[b] (B,). Copies in place."""
        for layer in self.layers:
            layer.k.copy_(layer.k.index_select(0, beam_idx))
            layer.v.copy_(layer.v.index_select(0, beam_idx))

    def memory_bytes(self) -> int:
        """Bytes held by every K and V buffer."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in (layer.k, layer.v))

    def mark_static(self) -> None:
        """Tell torch.compile the buffers never move, so CUDA graphs may write them in place.
        guard=False: the compiled step takes any such buffer, so the next call's new cache (same
        shapes) reuses the graph; torch up to 2.9 guarded on the tensor by default and recompiled."""
        for layer in self.layers:
            torch._dynamo.mark_static_address(layer.k, guard=False)
            torch._dynamo.mark_static_address(layer.v, guard=False)
