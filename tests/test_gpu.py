"""What only a GPU can show: the CUDA paths of generation and training, checked on a real device.

The rest of the suite runs everywhere (the fused sampling kernel too, in Triton's CPU
interpreter); this file checks what a CPU cannot exercise: CUDA's attention kernels against
transformers on the same device, the compiled decode step as a CUDA graph (mode="reduce-overhead",
static cache buffers; with the n-gram ban beside it), the compiled penalties, the fused sampler compiled for the GPU inside the decode loop, the KV
cache's memory as the allocator sees it, a bf16 + torch.compile training run, and what gradient
checkpointing and the chunked loss save of a training step's peak memory. Without a GPU
these tests are skipped (CI has none); `bash scripts/gpu_check.sh` runs them with the benchmarks.
"""
from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.generation import generate
from test_generate import (PAD, PROMPTS, assert_compiled_matches_eager_in_bf16, left_padded, min_top2_margin,
                           rows_repeating_an_ngram, sharpened_pair, tiny_config)
from test_model import largest_relative_diff
from test_train import make_data, tiny_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.fixture(scope="module")
def pair():
    model, hf = sharpened_pair(tiny_config())
    return model.cuda(), hf.cuda()


@torch.no_grad()
def test_greedy_equals_transformers_on_gpu(pair):
    """Left-padded batch, fp32: CUDA's SDPA kernels on both sides, the same tokens."""
    model, hf = pair
    ids, mask = (t.cuda() for t in left_padded(PROMPTS))
    ours = generate(model, ids, mask, max_new_tokens=24, eos_token_id=[], pad_token_id=PAD)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=PAD,
                         eos_token_id=None)
    out_mask = torch.cat([mask, torch.ones_like(ours[:, ids.size(1):])], 1)
    margin = min_top2_margin(model, ours, out_mask, ids.size(1))
    print(f"min top-2 logit margin {margin:.3g}")
    assert margin > 1e-3  # as on CPU: rounding noise cannot flip these argmaxes
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@torch.no_grad()
def test_compiled_cuda_graph_step_same_tokens_no_recompiles(pair, dtype):
    """compile=True on CUDA records the decode step as a CUDA graph: tokens equal the eager loop's
    (in bf16, but at near-ties: assert_compiled_matches_eager_in_bf16 says why), and every step and
    every prompt length within a cache bucket replays the same graph."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    model = copy.deepcopy(pair[0]).to(dtype)
    torch._dynamo.reset()
    counters.clear()

    def same_tokens(ids: torch.Tensor, mask: torch.Tensor, compiled: torch.Tensor) -> None:
        eager = generate(model, ids, mask, max_new_tokens=16, eos_token_id=[])
        if dtype == torch.float32:
            assert torch.equal(eager, compiled)
        else:
            assert_compiled_matches_eager_in_bf16(model, ids, mask, eager, compiled)

    ids, mask = (t.cuda() for t in left_padded(PROMPTS))
    same_tokens(ids, mask, generate(model, ids, mask, max_new_tokens=16, eos_token_id=[], compile=True))
    longer, longer_mask = (t.cuda() for t in left_padded([p + [9, 10] for p in PROMPTS]))  # same 64 bucket
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = generate(model, longer, longer_mask, max_new_tokens=16, eos_token_id=[], compile=True)
    same_tokens(longer, longer_mask, again)
    # Inductor falls back to a plain compiled step, silently, when it cannot capture a graph (say, a
    # cache buffer it sees as a mutated input): the tokens would still match. It counts each skip.
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])


@torch.no_grad()
def test_ngram_ban_on_gpu_with_the_cuda_graph_step_and_beams(pair):
    """no_repeat_ngram_size runs in the loop on the device, outside the CUDA-graph step: the
    compiled step gives the eager tokens with no graph skipped, and no row (nor beam) holds an
    n-gram twice."""
    from torch._dynamo.utils import counters

    model, _ = pair
    ids, mask = (t.cuda() for t in left_padded(PROMPTS))
    counters.clear()
    kw = dict(max_new_tokens=24, eos_token_id=[], no_repeat_ngram_size=2)
    eager = generate(model, ids, mask, **kw)
    assert torch.equal(eager, generate(model, ids, mask, compile=True, **kw))
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    beams = generate(model, ids, mask, num_beams=3, num_return_sequences=3, **{**kw, "no_repeat_ngram_size": 3})
    assert rows_repeating_an_ngram(eager.cpu(), mask.cpu(), 2) == 0
    assert rows_repeating_an_ngram(beams.cpu(), mask.cpu().repeat_interleave(3, 0), 3) == 0


@torch.no_grad()
def test_compiled_penalties_on_gpu(pair):
    """compile=True runs the penalties as one compiled (Triton) kernel on CUDA, not a dozen eager
    ones: within a rounding of the eager ops (a division may round its own way), and the greedy
    loop around it gives the eager loop's tokens, with no CUDA graph skipped."""
    from torch._dynamo.utils import counters

    from minigpt.penalties import compiled_penalize, penalize, token_counts

    model, _ = pair
    ids, mask = (t.cuda() for t in left_padded(PROMPTS))
    logits = torch.randn(3, model.config.vocab_size, device="cuda") * 3
    counts = token_counts(ids, model.config.vocab_size, mask)
    values = dict(repetition_penalty=torch.tensor([1.0, 1.3, 2.0], device="cuda"),
                  presence_penalty=torch.full((3,), 0.5, device="cuda"), frequency_penalty=torch.zeros(3, device="cuda"))
    torch.testing.assert_close(compiled_penalize()(logits, counts, counts, **values),
                               penalize(logits, counts, counts, **values), rtol=1e-6, atol=1e-6)  # (Inductor's
    # fp32 division may be 2 ulp off: x / 1.3 - 0.5 near 0 makes that a large relative error)
    counters.clear()
    kw = dict(max_new_tokens=16, eos_token_id=[], repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.2)
    assert torch.equal(generate(model, ids, mask, compile=True, **kw), generate(model, ids, mask, **kw))
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@torch.no_grad()
def test_fused_sampler_in_the_decode_loop(pair, compile):
    """sampler="triton" on CUDA: the same seed gives the same tokens, a temperature-0 row is
    greedy, and the kernel agrees with itself whether the step around it is compiled or not."""
    model, _ = pair
    ids, mask = (t.cuda() for t in left_padded(PROMPTS))
    kw = dict(max_new_tokens=12, do_sample=True, temperature=torch.tensor([0.0, 0.8, 1.2]), top_k=20,
              top_p=0.9, min_p=0.02, seed=3, sampler="triton", eos_token_id=[])
    a = generate(model, ids, mask, compile=compile, **kw)
    assert torch.equal(a, generate(model, ids, mask, compile=compile, **kw))
    assert not torch.equal(a, generate(model, ids, mask, compile=compile, **{**kw, "seed": 4}))
    greedy = generate(model, ids, mask, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(a[0], greedy[0])
    if compile:
        assert torch.equal(a, generate(model, ids, mask, **kw))


@torch.no_grad()
def test_kv_cache_memory_is_the_formula():
    """124M in bf16, batch 8: the cache holds 2·n_layer·B·max_len·n_embd·2 bytes, and the peak
    memory a generate call adds is that plus the prefill's activations and logits (< 64 MiB)."""
    config = GPTConfig.gpt2("gpt2")
    model = GPT(config).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, config.vocab_size, (8, 100), device="cuda")
    generate(model, ids, max_new_tokens=2, eos_token_id=[])  # first use: cuBLAS's workspace is allocated
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    _, stats = generate(model, ids, max_new_tokens=28, eos_token_id=[], return_stats=True)  # 127 slots → 128
    formula = 2 * config.n_layer * 8 * 128 * config.n_embd * 2
    added = torch.cuda.max_memory_allocated() - before
    print(f"KV cache {stats.kv_cache_bytes / 2**20:.2f} MiB (formula {formula / 2**20:.2f}); "
          f"peak added by generate {added / 2**20:.2f} MiB")
    assert stats.kv_cache_bytes == formula
    assert formula <= added <= formula + 64 * 2**20


def test_training_in_bf16_compiled_learns_and_reloads(tmp_path):
    """`minigpt train` on CUDA with bf16 autocast and torch.compile: the loss falls, and the
    checkpoint it writes loads back (in HF layout) and scores the data as well as it trained."""
    from minigpt.pretrain import pretrain

    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    cfg = tiny_cfg(data, out, device="cuda", dtype="bfloat16", compile=True, max_iters=60, eval_interval=20,
                   lr=1e-2, dropout=0.0)
    result = pretrain(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    print(f"loss {losses[0]:.3f} → {losses[-1]:.3f}; val {result['val_loss']:.3f}")
    assert losses[-1] < 0.5 * losses[0]
    reloaded = GPT.from_pretrained(out, device="cuda")
    x = torch.from_numpy(np.fromfile(data / "val.bin", dtype=np.uint16)[:17].astype(np.int64))[None].cuda()
    with torch.no_grad():
        _, loss = reloaded(x[:, :-1], targets=x[:, 1:])
    assert loss.item() < 2 * result["val_loss"] + 0.1


def bf16_step_peak_and_grads(model: GPT, idx: torch.Tensor, autocast: bool = True,
                             seed: int = 5) -> tuple[int, dict[str, torch.Tensor]]:
    """One bf16-autocast (or fp32) training step's peak CUDA memory and gradients (the same dropout
    masks for the same seed)."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        _, loss = model(idx, targets=idx)
    loss.backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_on_cuda_same_gradients_less_memory():
    """bf16 autocast on CUDA, dropout on (CUDA's RNG state is restored before the recompute): the
    same gradients (up to the order of the attention backward's atomic adds), and a step's peak
    memory well below the plain model's."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=256, n_layer=8, n_embd=256, n_head=4, n_positions=1024,
                               dropout=0.1)).cuda().train()
    idx = torch.randint(0, 256, (8, 1024), device="cuda")
    plain_peak, plain = bf16_step_peak_and_grads(model, idx)
    model.gradient_checkpointing = True
    peak, grads = bf16_step_peak_and_grads(model, idx)
    print(f"peak memory: {plain_peak / 2**20:.0f} MB plain, {peak / 2**20:.0f} MB checkpointed")
    diff = largest_relative_diff(grads, plain)
    model.gradient_checkpointing = False
    _, anew = bf16_step_peak_and_grads(model, idx, seed=6)  # other dropout masks
    print(f"max |Δgrad| relative to the tensor's largest: {diff:.1e} (other dropout masks: "
          f"{largest_relative_diff(anew, plain):.1e})")
    # The attention backward adds in fp32 atomics, in another order each run, and bf16 rounds the
    # sums: two H200 runs gave 1.3e-3 and under 1e-3. Other masks moved them by 0.58 (CPU, 2×512 tokens).
    assert diff < 4e-3
    assert largest_relative_diff(anew, plain) > 50 * diff
    assert peak < 0.5 * plain_peak


def test_chunked_loss_on_cuda_same_gradients_less_memory():
    """GPT-2's 50,257-token vocabulary at 8×1024 tokens, bf16 autocast, blocks checkpointed: the
    plain loss's logits, softmax and gradient dominate the step's peak memory; --chunked-loss
    holds one chunk's at a time, for the same gradients up to rounding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", n_layer=2, n_embd=256, n_head=4, n_positions=1024)).cuda().train()
    model.gradient_checkpointing = True
    idx = torch.randint(0, 50257, (8, 1024), device="cuda")
    _, exact = bf16_step_peak_and_grads(model, idx, autocast=False)  # fp32 throughout: the reference
    plain_peak, plain = bf16_step_peak_and_grads(model, idx)
    model.chunked_loss = True
    peak, grads = bf16_step_peak_and_grads(model, idx)
    print(f"peak memory: {plain_peak / 2**20:.0f} MB plain loss, {peak / 2**20:.0f} MB chunked")
    # The chunks' bf16 matmuls round differently from one large one: on an H200 the chunked and
    # plain gradients differed by 1.07e-2 of the tensor's largest (bf16 keeps 8 bits of mantissa).
    # Measured against fp32 instead, chunking must add no error of its own to bf16's.
    plain_err, chunked_err = largest_relative_diff(plain, exact), largest_relative_diff(grads, exact)
    print(f"max |Δgrad| vs fp32, relative to the tensor's largest: {plain_err:.1e} plain, {chunked_err:.1e} chunked")
    assert chunked_err < 1.5 * plain_err + 1e-3
    assert peak < 0.5 * plain_peak
