"""KV cache: decoding with the cache gives the logits of a full re-forward, at every step."""
import re

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.prefill_decode import decode_step, positions_from_mask, prefill, prefill_mask
from minigpt.kv_cache import KVCache, cache_length


def left_padded_batch(lengths: list[int], vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = 1
    return ids.masked_fill(mask == 0, 0), mask


def check_cache_matches_reforward(model: GPT, lengths: list[int], steps: int) -> float:
    """Prefill a left-padded batch, decode `steps` tokens; at every step compare each row's
    cached logits with a cache-free forward of that row's unpadded tokens. Returns the max diff."""
    ids, mask = left_padded_batch(lengths, model.config.vocab_size)
    B, T = ids.shape
    cache = KVCache.for_model(model, B, cache_length(T + steps, model.config.n_positions))
    key_valid = torch.zeros(B, cache.max_len, dtype=torch.bool)
    key_valid[:, :T] = mask.bool()
    rows = [ids[b, T - n:].tolist() for b, n in enumerate(lengths)]
    logits = prefill(model, ids, mask, cache)
    position_ids = positions_from_mask(mask)[:, -1:] + 1
    worst = 0.0
    for step in range(steps + 1):
        for b in range(B):
            full, _ = model(torch.tensor([rows[b]]))  # no cache, no padding: the reference
            worst = max(worst, (logits[b] - full[0, -1]).abs().max().item())
        if step == steps:
            break
        tokens = logits.argmax(-1)
        for b in range(B):
            rows[b].append(int(tokens[b]))
        key_valid[:, T + step] = True
        logits = decode_step(model, tokens[:, None], cache, torch.tensor([T + step]), position_ids,
                             key_valid[:, :T + step + 1])
        position_ids += 1
    return worst


@torch.no_grad()
def test_cache_matches_full_forward_small():
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=512)).eval()
    diff = check_cache_matches_reforward(model, [7, 3, 1, 5], steps=12)
    print(f"max |cached - full| logits: {diff:.2e}")
    assert diff < 2e-6  # measured 2.4e-7


@torch.no_grad()
def test_cache_matches_full_forward_124m():
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2")).eval()
    diff = check_cache_matches_reforward(model, [6, 2], steps=3)
    print(f"124M: max |cached - full| logits: {diff:.2e}")
    assert diff < 3e-5  # measured 3.2e-6


@torch.no_grad()
def test_decode_state_steps_match_a_full_forward_of_each_row():
    """DecodeState, as the decode loops drive it: prefill a left-padded batch (prompts of 5 and 2
    tokens), then decode 4 steps; each step's logits equal a cache-free forward of that row's
    tokens so far. The helper above computes its own positions, so this file missed an off-by-one
    in DecodeState.start (a mutation audit: position_ids without `+ 1` gave the first new token
    the prompt's last position, and every step after it one too few)."""
    from minigpt.prefill_decode import DecodeState

    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=512)).eval()
    lengths, steps = [5, 2], 4
    ids, mask = left_padded_batch(lengths, model.config.vocab_size)
    T = ids.size(1)
    rows = [ids[b, T - n:].tolist() for b, n in enumerate(lengths)]
    state = DecodeState(model, mask, max_new_tokens=steps + 1)
    logits = state.prefill(ids)
    worst = 0.0
    for step in range(steps + 1):
        for b, row in enumerate(rows):
            full, _ = model(torch.tensor([row]))  # no cache, no padding: the reference
            worst = max(worst, (logits[b] - full[0, -1]).abs().max().item())
        if step == steps:
            break
        tokens = logits.argmax(-1)  # (B,)
        for row, token in zip(rows, tokens.tolist()):
            row.append(token)
        logits = state.step(tokens[:, None])
    print(f"DecodeState: max |cached - full| logits: {worst:.2e}")
    assert worst < 2e-6  # measured 1.8e-7 (0.57 with the off-by-one)


@torch.no_grad()
def test_pad_rows_never_nan():
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=256)).eval()
    ids, mask = left_padded_batch([5, 1], 256)
    cache = KVCache.for_model(model, 2, 64)
    h = model.hidden_states(ids, position_ids=positions_from_mask(mask), kv_cache=cache,
                            input_pos=torch.arange(5), attn_mask=prefill_mask(mask))
    assert torch.isfinite(h).all(), "a pad query saw no key and produced NaN"


def test_update_writes_the_shared_positions():
    cache = KVCache(n_layer=1, batch_size=2, n_head=1, max_len=8, head_dim=2)
    k = torch.arange(8.0).view(2, 1, 2, 2)
    k_all, _ = cache.layer(0).update(torch.tensor([3, 4]), k, k)  # same slots for every row
    assert torch.equal(k_all[:, :, 3:5], k) and k_all[:, :, :3].eq(0).all() and k_all[:, :, 5:].eq(0).all()


def test_reorder_follows_beams():
    cache = KVCache(n_layer=2, batch_size=3, n_head=1, max_len=4, head_dim=1)
    for layer in cache.layers:
        layer.k.copy_(torch.arange(3.0).view(3, 1, 1, 1).expand_as(layer.k))
    before = cache.layer(1).k
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.layer(1).k is before  # reordered in place: the buffers keep their address
    assert cache.layer(1).k[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_memory_bytes_formula(dtype):
    config = GPTConfig.gpt2("gpt2-tiny")
    model = GPT(config).to(dtype)
    cache = KVCache.for_model(model, batch_size=3, max_len=64)
    bytes_per = torch.finfo(dtype).bits // 8
    assert cache.layer(0).k.dtype == dtype
    assert cache.memory_bytes() == 2 * config.n_layer * 3 * 64 * config.n_embd * bytes_per


def test_cache_length_buckets():
    assert [cache_length(n, 1024) for n in (1, 64, 65, 200, 1000)] == [64, 64, 128, 256, 1024]
    assert cache_length(100, 100) == 100  # capped at the context
    # Left pads take slots, not positions: past the context, a multiple of 64 (a bucket still, as a compiled step
    # needs; exactly the slots needed compiled a step for each padded width and max_new_tokens).
    assert [cache_length(n, 100) for n in (101, 128, 129)] == [128, 128, 192]


def test_update_stores_autocast_keys_in_the_buffers_dtype():
    """Under autocast the projections come out bf16 while the cache keeps the weights' fp32:
    `update` stores them converted (index_copy_ refuses mixed dtypes)."""
    cache = KVCache(n_layer=1, batch_size=1, n_head=1, max_len=4, head_dim=2)
    k = torch.tensor([[[[1.5, -2.0]]]], dtype=torch.bfloat16)
    k_all, v_all = cache.layer(0).update(torch.tensor([1]), k, 2 * k)
    assert k_all.dtype == v_all.dtype == torch.float32
    assert k_all[0, 0, 1].tolist() == [1.5, -2.0] and v_all[0, 0, 1].tolist() == [3.0, -4.0]


@torch.no_grad()
def test_both_phases_return_fp32_logits_for_a_bf16_model():
    """Sampling reads fp32 logits (a bf16 softmax and its penalties round coarsely): prefill and
    each decode step upcast them, whatever the weights' dtype."""
    from minigpt.prefill_decode import DecodeState

    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64)).to(torch.bfloat16).eval()
    ids = torch.tensor([[1, 2, 3]])
    state = DecodeState(model, torch.ones_like(ids), max_new_tokens=2)
    assert state.prefill(ids).dtype == torch.float32
    assert state.step(ids[:, -1:]).dtype == torch.float32


def test_a_cache_call_it_cannot_serve_is_refused_by_name():
    """An audit wrote its own decode loop from kv_cache.py: a step past slot 0 with no attn_mask
    ran and attended to its own key alone (logits 0.22 off a full forward); the other misuses
    failed inside index_copy_ ("index 64 is out of bounds", "must have same slice shapes")."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 64, (1, 5))
    cache = KVCache.for_model(model, 1, 8)
    with torch.no_grad():
        model(ids, kv_cache=cache, input_pos=torch.arange(5))  # a prefill from slot 0: no mask needed
        step = dict(position_ids=torch.tensor([[5]]), kv_cache=cache)
        with pytest.raises(ValueError, match="past cache slot 0 needs attn_mask"):
            model(ids[:, :1], input_pos=torch.tensor([5]), **step)
        with pytest.raises(ValueError, match="input_pos must be the slots this call writes.*NoneType"):
            model(ids[:, :1], **step)
        with pytest.raises(ValueError, match=r"int64 tensor of shape \(1,\); got torch.int32"):
            model(ids[:, :1], input_pos=torch.tensor([5], dtype=torch.int32), **step)
        with pytest.raises(ValueError, match=r"slots in \[0, 8\) of this cache, got 8: the cache is full"):
            model(ids[:, :1], input_pos=torch.tensor([8]), attn_mask=torch.ones(1, 1, 1, 8, dtype=torch.bool), **step)
        with pytest.raises(ValueError, match="hides slot 5, which this call writes"):
            model(ids[:, :1], input_pos=torch.tensor([5]), attn_mask=torch.ones(1, 1, 1, 5, dtype=torch.bool), **step)
        with pytest.raises(ValueError, match="9 slots wide, the cache holds 8"):
            model(ids[:, :1], input_pos=torch.tensor([5]), attn_mask=torch.ones(1, 1, 1, 9, dtype=torch.bool), **step)
        with pytest.raises(ValueError, match=r"kv_cache holds 1 rows, idx has 2.*KVCache.for_model\(model, 2"):
            model(ids.repeat(2, 1), kv_cache=cache, input_pos=torch.arange(5))
        # The right call, as decode_step makes it, equals a full forward.
        got = model(ids[:, :1], input_pos=torch.tensor([5]), attn_mask=torch.ones(1, 1, 1, 6, dtype=torch.bool), **step)[0]
        full = model(torch.cat([ids, ids[:, :1]], 1))[0]
    assert (got[0, -1] - full[0, -1]).abs().max() < 1e-5


def test_out_of_memory_is_the_allocators_failure_alone():
    """A review: four copies of the out-of-memory test (training's, the prefill's, the cache's and
    the result buffers'), two of them taking any error naming "allocate". One now, in checks.py: the
    CPU allocator's real failure (1 PiB, past any address space: refused at once) and a GPU's
    OutOfMemoryError are; torch's overflow past 2**63 bytes and other errors are not."""
    from minigpt.checks import is_out_of_memory

    with pytest.raises(RuntimeError) as allocator:
        torch.empty(2**50, dtype=torch.uint8)
    with pytest.raises(RuntimeError) as overflow:
        torch.empty(2**62, dtype=torch.float32)
    assert is_out_of_memory(allocator.value) and is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(overflow.value)
    assert not is_out_of_memory(RuntimeError("could not allocate a stream"))
    assert not is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))  # not torch's kind


def test_apples_mps_out_of_memory_is_out_of_memory():
    """A review: MPS says it as a plain RuntimeError (no torch.OutOfMemoryError), which the old test
    of "allocate" in the message caught and the allocator's words alone missed (a traceback, not
    the cache's size and what shrinks it). Simulated: there is no Mac here."""
    from minigpt.checks import is_out_of_memory

    mps = RuntimeError("MPS backend out of memory (MPS allocated: 1.50 GiB, other allocations: 20.00 MiB, max allowed: "
                       "18.13 GiB). Tried to allocate 24.00 GiB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO="
                       "0.0 to disable upper limit for memory allocations (may cause system failure).")
    assert is_out_of_memory(mps)
    with pytest.raises(RuntimeError) as overflow:  # still not out of memory
        torch.empty(2**62, dtype=torch.float32)
    assert not is_out_of_memory(overflow.value)


def test_a_cache_too_big_to_allocate_says_its_size_and_what_shrinks_it(tmp_path, capsys, monkeypatch):
    """An audit: `minigpt generate -n 65536` died in a 47-line traceback ending in the allocator's
    "can't allocate memory: you tried to allocate 206158430208 bytes". The cache now raises a
    MemoryError with its size and what shrinks it, and the CLI says it in one line (exit 2)."""
    with pytest.raises(MemoryError, match=r"^the KV cache does not fit: 1,000,000 rows × 10,000 slots × 2 layers × K and "
                                          r"V × 1024 channels in float32 is 152,587\.9 GiB, which cpu could not allocate; "
                                          r"generate fewer rows at once \(batch size, num_return_sequences, num_beams\) "
                                          r"or fewer tokens \(max_new_tokens\), or in bfloat16$"):
        KVCache(2, 10**6, 16, 10**4, 64)  # 40 TB a buffer: refused by the allocator at once, nothing touched
    with pytest.raises(MemoryError, match=r"in bfloat16 is .* \(max_new_tokens\)$"):  # (a review: it said "or in bfloat16")
        KVCache(2, 10**6, 16, 10**4, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="another failure"):  # any other error stays what it is
        with monkeypatch.context() as m:
            m.setattr(torch, "zeros", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("another failure")))
            KVCache(1, 1, 1, 1, 1)

    import minigpt.kv_cache as kv_cache
    from minigpt.generate_cli import main

    cfg = GPTConfig.gpt2("gpt2-tiny", n_positions=64, n_embd=32, n_head=2)
    torch.manual_seed(0)
    GPT(cfg).save_pretrained(tmp_path)

    def too_big(*args, **kwargs):  # as the CPU allocator fails (a real 200 GB cache would risk the OOM killer)
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(kv_cache.torch, "zeros", too_big)
    assert main(["--model", str(tmp_path), "--tokenizer", "gpt2", "--prompt", "Hi", "-n", "65536", "--max-new-tokens", "8",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the KV cache does not fit: 65,536 rows × " in err and "Traceback" not in err


def test_for_model_refuses_a_config_that_no_longer_describes_the_model():
    """An audit: the cache is shaped by the config while attention uses its own n_head copy, so
    n_head changed on the config alone failed in the first decode step as a raw index_copy_ shape
    error, and a block appended without raising n_layer as a bare IndexError. for_model, which
    every generation calls once, now names the field to set."""
    model = GPT(GPTConfig(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=4))
    model.config.n_head = 8
    with pytest.raises(ValueError, match=r"^model.config.n_head is 8 but model.transformer.h\[0\].attn.n_head is 4: "
                                         r"the two must agree"):
        KVCache.for_model(model, 1, 64)
    model.config.n_head = 4
    model.transformer.h.append(model.transformer.h[0])
    with pytest.raises(ValueError, match=r"^model.config.n_layer is 2 but model.transformer.h holds 3 blocks: "
                                         r"set model.config.n_layer = 3$"):
        KVCache.for_model(model, 1, 64)


def test_repr_says_the_caches_shape_dtype_and_device():
    """An audit: repr(KVCache(...)) was `<minigpt.kv_cache.KVCache object at 0x...>`, which tells a
    reader in a debugger nothing of what the cache holds."""
    cache = KVCache(n_layer=2, batch_size=3, n_head=4, max_len=64, head_dim=8, dtype=torch.bfloat16)
    assert repr(cache) == ("KVCache(n_layer=2, batch_size=3, n_head=4, max_len=64, head_dim=8, dtype=bfloat16, "
                           "device=cpu)")
    with torch.device("meta"):  # no device given: where torch's default device put them
        assert repr(KVCache(1, 1, 2, 8, 4)).endswith("device=meta)")


@pytest.mark.parametrize("device, held_on", [("meta", "meta"), ("cpu:0", "cpu")])
def test_repr_says_where_the_buffers_are_not_the_device_asked_for(device, held_on):
    """A review: the repr kept its own copy of the device as asked, so device="cuda" showed "cuda"
    for buffers on cuda:0 (here "cpu:0" for buffers on "cpu"); it now reads the buffers'."""
    cache = KVCache(n_layer=1, batch_size=1, n_head=2, max_len=8, head_dim=4, device=device)
    assert repr(cache).endswith(f"dtype=float32, device={held_on})") and cache.layers[0].k.device == torch.device(held_on)


@pytest.mark.parametrize("n_layer", [0, -1])
def test_a_cache_of_no_layer_is_refused(n_layer):
    """A review: KVCache(n_layer=0, ...) was built, a cache that holds nothing, and its repr, which
    reads the first layer's buffer, raised IndexError. No model has no block (GPTConfig refuses
    n_layer=0): the cache refuses it too, naming it."""
    with pytest.raises(ValueError, match=rf"^n_layer must be at least 1 \(the cache holds each layer's K and V\), "
                                         rf"got {n_layer}$"):
        KVCache(n_layer=n_layer, batch_size=1, n_head=1, max_len=4, head_dim=4)


@torch.no_grad()
def test_a_cached_call_without_position_ids_takes_its_slots_as_positions():
    """An audit: a decode step at slot 8 with no position_ids ran at position 0 (0 .. T-1, as
    without a cache), its logits 0.76 off a full forward. With a cache the positions default to
    input_pos, as transformers takes them from its cache position."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 64, (2, 9))
    cache = KVCache.for_model(model, 2, 16)
    model(ids[:, :8], kv_cache=cache, input_pos=torch.arange(8))
    got = model(ids[:, 8:], kv_cache=cache, input_pos=torch.tensor([8]), attn_mask=torch.ones(1, 1, 1, 9, dtype=torch.bool))[0]
    diff = (got[:, -1] - model(ids)[0][:, -1]).abs().max().item()
    print(f"decode step without position_ids: max |cached - full| logits {diff:.2e}")
    assert diff < 1e-5  # measured 3e-7 (0.76 at position 0)


def _other_cache(model: GPT, **change) -> KVCache:
    """A cache as for_model builds it for `model`, with the fields in `change` replaced."""
    c = model.config
    fields = dict(n_layer=c.n_layer, batch_size=1, n_head=c.n_head, max_len=16, head_dim=c.head_dim)
    return KVCache(**{**fields, **change})


@pytest.mark.parametrize("change, named", [
    (dict(dtype=torch.bfloat16), "the cache has dtype=bfloat16, the model needs dtype=float32"),
    (dict(n_head=2, head_dim=16), "the cache has n_head=2, head_dim=16, the model needs n_head=4, head_dim=8"),
    (dict(n_layer=1), "the cache has n_layer=1, the model needs n_layer=2"),
    (dict(n_layer=3), "the cache has n_layer=3, the model needs n_layer=2"),
    (dict(device="meta"), "the cache has device=meta, the model needs device=cpu"),
])
def test_a_cache_built_for_another_model_is_refused_naming_both_sides(change, named):
    """An audit: a cache of another dtype failed in SDPA ("Expected query, key, and value to have
    the same dtype"), of other heads in index_copy_, of fewer layers as a bare IndexError, and one
    of more layers ran. Every call with a cache now checks its layout against the model's."""
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    with pytest.raises(ValueError, match=rf"^kv_cache does not fit this model: {re.escape(named)}; build it with "
                                         r"KVCache.for_model\(model, batch_size, max_len\)$"):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=_other_cache(model, **change), input_pos=torch.arange(3))
    model(torch.zeros(1, 3, dtype=torch.long), kv_cache=_other_cache(model), input_pos=torch.arange(3))  # a fit one runs


@torch.no_grad()
def test_a_cache_in_autocasts_dtype_serves_a_float32_model_under_autocast():
    """A review: the layout check refused a bfloat16 cache for a float32 model run under bfloat16
    autocast, which worked (its K and V come out in bfloat16, stored as they are). Taken again;
    outside autocast it is still refused (SDPA fails on mixed dtypes there)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    ids, cache = torch.randint(0, 64, (1, 5)), _other_cache(model, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(ids)[0][:, -1]
        model(ids[:, :4], kv_cache=cache, input_pos=torch.arange(4))
        got = model(ids[:, 4:], kv_cache=cache, input_pos=torch.tensor([4]), attn_mask=torch.ones(1, 1, 1, 5, dtype=torch.bool))[0]
    assert (got[:, -1] - want).abs().max() < 0.05  # bfloat16's rounding of K and V alone
    with pytest.raises(ValueError, match="the cache has dtype=bfloat16, the model needs dtype=float32"):
        model(ids[:, :4], kv_cache=cache, input_pos=torch.arange(4))


@torch.no_grad()
def test_a_cached_mask_that_lets_a_token_see_a_later_slot_is_refused():
    """An audit verifying 3 draft tokens in one cached call: an all-True mask (each draft seeing
    the later drafts) was accepted and its logits were 0.08 off a full forward, while the same
    mask without a cache is refused. Refused with a cache too (on a CPU, as without one); the mask
    the error and the docstring give matches a full forward, for left-padded rows as well."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    P, k = 6, 3
    ids, mask = left_padded_batch([P + k, P + k - 4], 64)  # row 1: 4 left pads
    cache = KVCache.for_model(model, 2, 16)
    model(ids[:, :P], kv_cache=cache, input_pos=torch.arange(P), position_ids=positions_from_mask(mask[:, :P]),
          attn_mask=prefill_mask(mask[:, :P]))
    drafts = dict(kv_cache=cache, input_pos=torch.arange(P, P + k), position_ids=positions_from_mask(mask)[:, P:])
    with pytest.raises(ValueError, match=r"^attn_mask lets the token at slot 6 \(query 0, row 0\) see slot 7, a later "
                                         r"one: .* pass prefill_mask\(attention_mask\)\[:, :, P:\]"):
        model(ids[:, P:], attn_mask=torch.ones(1, 1, k, P + k, dtype=torch.bool), **drafts)
    got = model(ids[:, P:], attn_mask=prefill_mask(mask)[:, :, P:], **drafts)[0]  # (B, k, V)
    worst = 0.0
    for b, n in enumerate([P + k, P + k - 4]):
        full = model(ids[b:b + 1, P + k - n:])[0]  # the row alone, unpadded
        worst = max(worst, (got[b] - full[0, -k:]).abs().max().item())
    print(f"3 drafts in one cached call: max |cached - full| logits {worst:.2e}")
    assert worst < 1e-5  # measured 3e-7


@torch.no_grad()
def test_decode_state_step_takes_samples_tokens_and_a_refused_step_changes_nothing():
    """An audit: step(sample(logits)), tokens (B,), failed with the model's "idx must be token ids
    of shape (B, T) ... (one sequence: idx[None])", whose hint failed again, and the failed call
    had already marked the next slot readable. (B,) is now taken as (B, 1); another shape is
    refused, naming both, before any of the state changes."""
    from minigpt.prefill_decode import DecodeState

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 64, (3, 5))
    flat, column = (DecodeState(model, torch.ones_like(ids), max_new_tokens=4) for _ in range(2))
    tokens = flat.prefill(ids).argmax(-1)  # (3,), as sample() gives them
    column.prefill(ids)
    assert torch.equal(flat.step(tokens), column.step(tokens[:, None]))
    before = (flat.slot, flat.input_pos.clone(), flat.position_ids.clone(), flat.key_valid.clone())
    with pytest.raises(ValueError, match=r"^DecodeState.step takes one token per row of its 3: ids of shape \(3,\), as "
                                         r"sample\(\) gives them, or \(3, 1\); got shape \(1, 3\)$"):
        flat.step(tokens[None])
    with pytest.raises(TypeError, match="integer token ids, got torch.float32"):
        flat.step(tokens.float())
    after = (flat.slot, flat.input_pos, flat.position_ids, flat.key_valid)
    assert after[0] == before[0] and all(torch.equal(a, b) for a, b in zip(after[1:], before[1:]))


@torch.no_grad()
@pytest.mark.parametrize("n_positions, max_new_tokens, hint", [
    (256, 10, "build the DecodeState with a larger max_new_tokens"),  # the 64-slot bucket ends first
    (64, 60, r"the model's context ends here \(n_positions=64\); to go on past it, generate\(slide=N\)"),
])
def test_a_step_past_the_cache_says_it_is_full_and_changes_nothing(n_positions, max_new_tokens, hint):
    """An audit's hand-written loop stepped past its cache and got torch's bare "IndexError: index
    64 is out of bounds for dimension 1 with size 64", from marking the next slot readable: past the
    power-of-two bucket sized for prompt + max_new_tokens (before the context was full), and at
    n_positions alike. Now a ValueError says the cache is full, what sized it and what to do."""
    from minigpt.prefill_decode import DecodeState

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = torch.randint(0, 64, (2, 5))
    state = DecodeState(model, torch.ones_like(ids), max_new_tokens=max_new_tokens)
    tokens = state.prefill(ids).argmax(-1)
    for _ in range(64 - 5):  # every slot of the 64 is written
        tokens = state.step(tokens).argmax(-1)
    before = (state.slot, state.input_pos.clone(), state.position_ids.clone(), state.key_valid.clone())
    with pytest.raises(ValueError, match=rf"^DecodeState.step: the KV cache is full: its 64 slots, sized for the prompts' 5 "
                                         rf"slots \(left pads included\) \+ the max_new_tokens={max_new_tokens} given to "
                                         rf"DecodeState, less 1 .*are all written; {hint}"):
        state.step(tokens)
    after = (state.slot, state.input_pos, state.position_ids, state.key_valid)
    assert after[0] == before[0] == 64 and all(torch.equal(a, b) for a, b in zip(after[1:], before[1:]))


@torch.no_grad()
def test_a_padded_batch_past_the_context_steps_until_its_positions_or_slots_end():
    """Rows of 60 slots, 10 of them left pads, in a model of n_positions=64: pads take slots, not
    positions, so their cache (a multiple of 64 slots past the context, 128 here) has slots past the
    rows' last position. A step goes on while the rows have positions left, and past them is refused
    naming the context's end, not a full cache (a review: the error said "rounded up to a power of
    two" and "the context ends here" of a cache that was full first). Rows whose pads are inside
    them fill the slots first: then the cache is full, rounded up to a multiple of 64."""
    from minigpt.prefill_decode import DecodeState

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    mask = torch.ones(2, 60, dtype=torch.long)
    mask[:, :10] = 0
    state = DecodeState(model, mask, max_new_tokens=10)
    tokens = state.prefill(torch.randint(0, 64, (2, 60))).argmax(-1)
    for _ in range(14):  # positions 50 .. 63
        tokens = state.step(tokens).argmax(-1)
    assert state.cache.max_len == 128 and state.position_ids.flatten().tolist() == [64, 64]
    with pytest.raises(ValueError) as caught:
        state.step(tokens)
    assert str(caught.value) == ("DecodeState.step: the longest row is at the model's context end (n_positions=64); "
                                 "to go on past it, generate(slide=N) slides the context")
    assert state.slot == 74 and state.position_ids.flatten().tolist() == [64, 64]  # the refused step changed nothing

    mask = torch.zeros(2, 100, dtype=torch.long)
    mask[:, ::10] = 1  # 10 tokens a row, 90 pads among them
    state = DecodeState(model, mask, max_new_tokens=10)
    tokens = state.prefill(torch.randint(0, 64, (2, 100))).argmax(-1)
    for _ in range(28):
        tokens = state.step(tokens).argmax(-1)
    with pytest.raises(ValueError) as caught:
        state.step(tokens)
    assert str(caught.value) == (
        "DecodeState.step: the KV cache is full: its 128 slots, sized for the prompts' 100 slots (left pads included) + "
        "the max_new_tokens=10 given to DecodeState, less 1 (the last new token is never fed back), rounded up to a "
        "multiple of 64, are all written; build the DecodeState with a larger max_new_tokens for more steps")


def test_a_slide_takes_the_newest_token_of_each_row_of_a_sliding_state():
    """DecodeState.slide prefills again the ids its slots were fed (slot_ids, kept with slides=True)
    and the newest token, which it takes as step does, one per row; a keep outside 1..n_positions
    and a state made without slides (it keeps no ids) are told so."""
    from minigpt.prefill_decode import DecodeState

    model = GPT(GPTConfig(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=4)).eval()
    ids = torch.randint(0, 64, (1, 17))
    with torch.no_grad():
        state = DecodeState(model, torch.ones(1, 16, dtype=torch.long), max_new_tokens=4, slides=True)
        state.prefill(ids[:, :16])
        assert state.full() and torch.equal(state.slot_ids, ids[:, :16])
        with pytest.raises(ValueError, match=r"DecodeState.slide takes one token per row of its 1: ids of shape \(1,\)"):
            state.slide(ids, keep=8)
        logits = state.slide(ids[:, -1], keep=8)
        assert state.slot == 8 and torch.equal(state.slot_ids[:, :8], ids[:, -8:])
        torch.testing.assert_close(logits, model(ids[:, -8:])[0][:, -1])  # the last 8, from position 0
        for keep in (-1, 0, 17, 2.0):  # (-1 chose no token: an all-pad prefill, without a word)
            with pytest.raises(ValueError, match=rf"DecodeState.slide keeps 1 to n_positions=16 tokens of a full row, "
                                                 rf"got keep={keep}"):
                state.slide(ids[:, -1], keep=keep)
        plain = DecodeState(model, torch.ones(1, 16, dtype=torch.long), max_new_tokens=1)
        with pytest.raises(ValueError, match=r"DecodeState.slide needs a state made with slides=True"):
            plain.slide(ids[:, -1], keep=8)
