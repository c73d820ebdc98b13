"""minigpt.linear.Linear: the oneDNN inference path equals F.linear, packs once, follows weight
changes, frees its copy for training, survives copying and compiles (minigpt/linear.py says why
it exists)."""
from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt import GPT, GPTConfig
from minigpt.linear import _PACKED, ONEDNN, Linear, PackedCopy, _view, forget_packed
from minigpt.linear import memory as MEMORY  # the real one, imported before conftest's stand-in

needs_onednn = pytest.mark.skipif(not ONEDNN, reason="the oneDNN path exists on x86 CPUs only")
# Relative to the output's scale. Measured over the cases below: 2.2e-7 in fp32, 3.5e-3 in bf16
# (its output is rounded to 8 bits of mantissa).
TOL = {torch.float32: 2e-6, torch.bfloat16: 1e-2}


def cache_entry(w: torch.Tensor) -> PackedCopy | None:
    """What minigpt.linear keeps for `w` (under its storage): a PackedCopy (its version when packed, its
    packed copy or None, where its fingerprint lies and the fingerprint), or None where none is kept."""
    return _PACKED.get(w.untyped_storage(), {}).get(_view(w))


def every_fp32_shape_to_onednn(monkeypatch) -> None:
    """Send even the fp32 products that MKL keeps (`minigpt.linear.mkl_rows`: up to 3 rows on Intel,
    one row on one thread on a CPU without AVX-512) to oneDNN, whatever CPU runs the test."""
    import minigpt.linear as linear

    monkeypatch.setattr(linear, "MKL_ROWS", 0)
    monkeypatch.setattr(linear, "ONE_ROW_MKL_ON_ONE_THREAD", False)


def layer(dtype=torch.float32, bias=True) -> Linear:
    torch.manual_seed(0)
    return Linear(96, 200, bias=bias).to(dtype)


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 96), (8, 1, 96), (2, 37, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_inference_path_matches_f_linear(dtype, shape, bias, monkeypatch):
    import minigpt.linear as linear

    every_fp32_shape_to_onednn(monkeypatch)
    lin = layer(dtype, bias)
    x = torch.randn(shape).to(dtype)
    with torch.no_grad():
        got = lin(x)
        # The oneDNN path ran, not F.linear; bf16 only on CPUs with AVX-512 (elsewhere F.linear,
        # held to the same tolerance here).
        assert (cache_entry(lin.weight) is not None) == (dtype == torch.float32 or linear.ONEDNN_BF16)
        # The reference in fp32 from the same (rounded) inputs.
        ref = F.linear(x.float(), lin.weight.float(), None if lin.bias is None else lin.bias.float())
    rel = ((got.float() - ref).abs().max() / ref.abs().max()).item()
    print(f"{dtype} {shape} bias={bias}: max |Δ| / max |y| = {rel:.2e}")
    assert got.dtype == dtype and got.shape == ref.shape
    assert rel <= TOL[dtype]


@needs_onednn
def test_a_packed_copy_the_machine_has_no_room_for_is_not_made(monkeypatch):
    """An audit of the four sizes: gpt2-xl in fp32 held 11.4 GB of private memory once generating
    (the weights, and their packed copies), enough to push a 16 GB laptop into swap or the OOM
    killer. A copy that would leave less than an eighth of the memory (and 1 GiB) free is not
    made: that weight runs on F.linear, with one warning; the ones that fit are still packed."""
    import minigpt.linear as linear

    every_fp32_shape_to_onednn(monkeypatch)
    monkeypatch.setattr(linear, "_PACKED_OUT_OF_ROOM", [])
    small, big, big2 = layer(), Linear(96, 4096), Linear(96, 4096)  # 38 KB and 1.6 MB of fp32
    gib = 2**30
    monkeypatch.setattr(linear, "memory", lambda: (2 * gib + 1_000_000, 16 * gib))  # 2 GiB + 1 MB free of 16
    x = torch.randn(3, 96)
    forget_packed()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.allclose(big(x), F.linear(x, big.weight, big.bias), atol=1e-5)
        assert cache_entry(big.weight).packed is None  # not packed, and not asked again
        big2(x)  # one warning, not one per weight
        out = small(x)  # fits: packed
        assert cache_entry(small.weight).packed is not None and torch.allclose(out, F.linear(x, small.weight, small.bias), atol=1e-5)
        # The compiled call (its custom op) falls back too; without it, its output had 0 columns.
        forget_packed()
        assert torch.allclose(torch.compile(big, fullgraph=True)(x), F.linear(x, big.weight, big.bias), atol=1e-5)
    assert [str(w.message) for w in caught if "memory free" in str(w.message)] == [
        "only 2.0 GiB of memory free: weights that do not fit a second, packed copy run on F.linear (slower); a smaller "
        "--dtype (bfloat16) makes room, MINIGPT_ONEDNN=0 packs none"]
    monkeypatch.setattr(linear, "memory", lambda: None)  # a system that does not say: packed
    forget_packed()
    with torch.no_grad():
        big(x)
    assert cache_entry(big.weight).packed is not None


def test_memory_reads_what_linux_calls_available(monkeypatch):
    """MemAvailable (the page cache the kernel would give back included), not MemFree, and in the
    order (available, total) that room_for reads (a mutation audit)."""
    import builtins

    text = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\nHugePages_Total:  0\n"
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: io.StringIO(text) if path == "/proc/meminfo"
                        else real_open(path, *a, **k))
    assert MEMORY() == (8000000 * 1024, 16000000 * 1024)  # (conftest replaces linear.memory for every test)


@needs_onednn
def test_a_row_or_two_in_fp32_stay_on_mkl_where_mkl_is_faster(monkeypatch):
    """On Intel CPUs fp32 products of at most MKL_ROWS rows (2 here) are F.linear's (MKL), nothing
    packed for them; more rows, and bf16, take oneDNN."""
    import minigpt.linear as linear

    monkeypatch.setattr(linear, "MKL_ROWS", 2)
    monkeypatch.setattr(linear, "ONE_ROW_MKL_ON_ONE_THREAD", False)  # as on Intel
    lin = layer()
    with torch.no_grad():
        for shape in [(1, 96), (2, 96), (1, 2, 96), (2, 1, 96)]:
            x = torch.randn(shape)
            assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias)) and cache_entry(lin.weight) is None
        lin(torch.randn(3, 1, 96))
        assert cache_entry(lin.weight) is not None
        if linear.ONEDNN_BF16:
            half = layer(torch.bfloat16)
            half(torch.randn(1, 96).bfloat16())
            assert cache_entry(half.weight) is not None


@needs_onednn
def test_one_row_stays_on_mkl_on_one_thread_without_avx512(monkeypatch):
    """Without AVX-512, MKL's one-row product beat oneDNN's on one thread (55.9 against 70.0 ms for
    124M's decode step on an AVX2 AMD EPYC) and lost on two (52.9 against 44.8): one row on one
    thread is F.linear's, eager and compiled (the custom op asks at each call), and nothing is packed
    for it; on two threads oneDNN's again, also in a function compiled on one."""
    import minigpt.linear as linear

    monkeypatch.setattr(linear, "MKL_ROWS", 0)
    monkeypatch.setattr(linear, "ONE_ROW_MKL_ON_ONE_THREAD", True)
    lin, one, two = layer(), torch.randn(1, 1, 96), torch.randn(2, 96)
    compiled = torch.compile(lin, fullgraph=True)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            assert linear.mkl_rows() == 1
            for call in (lin, compiled):
                forget_packed()
                assert torch.equal(call(one), F.linear(one, lin.weight, lin.bias)) and cache_entry(lin.weight) is None
                call(two)  # two rows: oneDNN's
                assert cache_entry(lin.weight) is not None
            torch.set_num_threads(2)
            assert linear.mkl_rows() == 0
            for call in (lin, compiled):
                forget_packed()
                assert torch.allclose(call(one), F.linear(one, lin.weight, lin.bias), atol=1e-5)
                assert cache_entry(lin.weight) is not None
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(linear, "ONE_ROW_MKL_ON_ONE_THREAD", False)  # an AVX-512 CPU: every row oneDNN's
    assert linear.mkl_rows() == 0


@needs_onednn
def test_packs_once_and_repacks_when_the_weight_changes():
    lin, x = layer(), torch.randn(4, 96)
    with torch.no_grad():
        lin(x)
        packed = cache_entry(lin.weight).packed
        lin(x)
        assert cache_entry(lin.weight).packed is packed  # reused, not rebuilt every call
        lin.weight.mul_(2)  # in place: same tensor, new version
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)
        assert cache_entry(lin.weight).packed is not packed
        lin.load_state_dict({"weight": torch.zeros(200, 96), "bias": torch.ones(200)})
        assert torch.equal(lin(x), torch.ones(4, 200))
        lin.weight.data.fill_(1.0)  # through .data: no version bump, invisible until forgotten
        forget_packed()
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)


@needs_onednn
def test_a_dtype_round_trip_between_calls_repacks():
    """.to(bf16).to(fp32) swaps the weight's storage twice and keeps its version: the packed copy of
    the old fp32 values must not be served for the new (bf16-rounded) ones at a reused address."""
    lin, x = layer(), torch.randn(4, 96)
    with torch.no_grad():
        for _ in range(20):  # (whether malloc reuses the address varies: try it often)
            lin.weight.add_(torch.randn_like(lin.weight))  # values bf16 does not hold
            lin(x)
            lin.to(torch.bfloat16).to(torch.float32)
            # A stale copy is off by bf16's rounding of weights this large (≥ 0.05 here); two fp32
            # products of the same values differ by their summation order only (≤ 1e-4, as oneDNN
            # sums by the CPU's vector width: 5e-5 on an AVX-512 Xeon, where atol=1e-5 failed).
            assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-3)


@needs_onednn
@pytest.mark.parametrize("weights, inputs", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_mismatched_dtypes_fail_as_nn_linear_fails(weights, inputs):
    """Input and weights of two dtypes are nn.Linear's clear "same dtype" error, not an error from
    inside oneDNN ("could not create a primitive descriptor"), which is what its call would give."""
    lin = Linear(16, 8).to(weights)
    with torch.no_grad(), pytest.raises(RuntimeError, match="same dtype"):
        lin(torch.randn(2, 16, dtype=inputs))


@needs_onednn
@pytest.mark.parametrize("kw", [dict(fused=True), dict(foreach=False)], ids=["fused", "for-loop"])
def test_an_optimizer_step_outside_forward_is_seen(kw):
    """Bug guarded: a fused AdamW updates the weight in place without bumping its version, so a
    weight trained without a call to Linear.forward (the LM head under the chunked loss, which
    takes lm_head.weight itself) kept the copy packed before the step: no-grad calls, evaluation
    and generation, used the old weights (the validation loss stalled after the first eval)."""
    lin, x = layer(), torch.randn(4, 96)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1, **kw)
    for _ in range(2):
        with torch.no_grad():
            assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)
        F.linear(x, lin.weight, lin.bias).square().sum().backward()  # trained outside Linear.forward
        opt.step()


def test_training_uses_autograd_and_frees_the_packed_copy():
    lin, x = layer(), torch.randn(4, 96)
    with torch.no_grad():
        lin(x)
    y = lin(x)  # grad enabled: F.linear, differentiable
    assert cache_entry(lin.weight) is None and y.grad_fn is not None
    y.sum().backward()
    assert lin.weight.grad is not None


@needs_onednn
def test_autocast_is_obeyed_as_nn_linear_obeys_it():
    """Under CPU autocast (train --dtype bfloat16 evaluates with grad off) Linear computes in
    bfloat16 as nn.Linear does, with or without grad, instead of taking the fp32 oneDNN path."""
    lin, x = layer(), torch.randn(4, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.linear(x, lin.weight, lin.bias)
        with torch.no_grad():
            got = lin(x)
        assert lin(x).dtype == got.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(got, ref)
    with torch.no_grad():
        assert lin(x).dtype == torch.float32 and cache_entry(lin.weight) is not None  # outside autocast: the oneDNN path again


def test_generate_runs_under_cpu_autocast():
    """Under autocast the projections give bf16 k/v; the KV cache (the weights' fp32) stores them
    in its own dtype instead of failing in index_copy_."""
    from minigpt import GPT, GPTConfig, generate

    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300)).eval()
    ids = torch.randint(0, 300, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate(model, ids, max_new_tokens=4, eos_token_id=[])
    assert out.shape == (2, 9) and torch.equal(out[:, :5], ids)


@needs_onednn
def test_bfloat16_stays_on_f_linear_where_onednn_has_no_bf16(monkeypatch):
    """Below AVX-512 oneDNN's bf16 reorder raises: such a CPU computes bf16 with F.linear, fp32 still packed."""
    import minigpt.linear as linear

    monkeypatch.setattr(linear, "ONEDNN_BF16", False)
    lin, x = layer(), torch.randn(4, 96)
    half = copy.deepcopy(lin).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(half(x.bfloat16()), F.linear(x.bfloat16(), half.weight, half.bias))
        assert cache_entry(half.weight) is None
        lin(x)
        assert cache_entry(lin.weight) is not None


def test_copies_and_pickles():
    lin, x = layer(), torch.randn(4, 96)
    with torch.no_grad():
        ref = lin(x)
        twin = copy.deepcopy(lin)
        assert torch.equal(twin(x), ref)
        buf = io.BytesIO()
        torch.save(lin, buf)
        buf.seek(0)
        assert torch.equal(torch.load(buf, weights_only=False)(x), ref)


def test_state_dict_is_nn_linears():
    lin = layer()
    assert set(lin.state_dict()) == {"weight", "bias"} and isinstance(lin, torch.nn.Linear)


@needs_onednn
def test_model_logits_inference_path_equals_autograd_path():
    """The whole model: no_grad (oneDNN) and grad-enabled (F.linear) logits agree in fp32."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny")).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 33))
    with torch.no_grad():
        fast, _ = model(idx)
    plain, _ = model(idx)
    diff = (fast - plain).abs().max().item()
    print(f"oneDNN vs F.linear logits: max |Δ| = {diff:.2e}")
    assert diff <= 3e-6  # measured 3.6e-7 (|logit| ~ 1)


@needs_onednn
def test_weights_made_under_inference_mode_are_not_cached():
    """Inference tensors have no version counter, so a cached copy could go stale unseen."""
    with torch.inference_mode():
        lin, x = layer(), torch.randn(4, 96)
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)
        lin.weight.mul_(2)
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)
        assert cache_entry(lin.weight) is None


@needs_onednn
def test_a_weight_in_shared_memory_is_read_as_another_process_wrote_it():
    """An audit (Hogwild, pytorch/examples' mnist_hogwild): after `share_memory()`, a spawned
    process's in-place write bumped only its own version counter, so this process went on
    multiplying by its stale packed copy. A weight in shared memory is now never packed."""
    lin, x = layer().share_memory(), torch.randn(4, 96)  # 4 rows: past MKL_ROWS, the oneDNN path
    with torch.no_grad():
        lin(x)  # where a packed copy would be made
    writer = torch.multiprocessing.get_context("spawn").Process(target=nn.init.zeros_, args=(lin.weight,))
    writer.start()
    writer.join(timeout=60)
    assert writer.exitcode == 0 and lin.weight.abs().sum() == 0  # the write reached this process's memory
    with torch.no_grad():
        assert torch.equal(lin(x), lin.bias.expand(4, 200))
    assert cache_entry(lin.weight) is None


@needs_onednn
def test_a_copy_packed_before_share_memory_is_dropped_at_the_next_call():
    """An audit: a weight packed, then moved into shared memory (`share_memory()` moves the storage
    in place, so the copy's key stays), kept its packed copy, never read again, as long as it lived."""
    lin, x = layer(), torch.randn(4, 96)  # 4 rows: past MKL_ROWS, the oneDNN path
    with torch.no_grad():
        lin(x)
    assert cache_entry(lin.weight).packed is not None  # packed: the copy the test expects to see go
    lin.share_memory()
    with torch.no_grad():
        lin(x)
    assert lin.weight.untyped_storage() not in _PACKED


@needs_onednn
def test_compiled_inference_keeps_the_onednn_op():
    """torch.compile sees the custom op (no graph break with fullgraph) and gets the same numbers."""
    lin, x = layer(), torch.randn(3, 5, 96)
    with torch.no_grad():
        compiled = torch.compile(lin, fullgraph=True)
        assert torch.equal(compiled(x), lin(x))
        graph = torch._dynamo.explain(lin)(x)
    assert graph.graph_break_count == 0
    assert "minigpt.onednn_linear" in str(graph.graphs[0].code)


def test_environment_variable_turns_onednn_off():
    """MINIGPT_ONEDNN=0: plain F.linear, and no packed copy beside the weight."""
    code = ("import torch; from minigpt.linear import ONEDNN, _PACKED, Linear; m = Linear(8, 4)\n"
            "with torch.no_grad(): m(torch.randn(2, 8))\n"
            "print(ONEDNN, len(_PACKED))")
    env = {**os.environ, "MINIGPT_ONEDNN": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "0"]


def test_parameters_can_be_swapped_after_an_inference_call():
    """Bug guarded: the packed copies were keyed weakly on each weight Parameter, and a weak
    reference stops torch.utils.swap_tensors. With
    torch.__future__.set_swap_module_params_on_conversion(True) (to become PyTorch's default),
    after any no-grad forward `model.to(torch.bfloat16)` raised "Couldn't swap Embedding.weight"
    and load_state_dict "Cannot swap t1 because it has weakref associated with it". Both now swap,
    and the next calls pack the new weights."""
    torch.manual_seed(0)
    model, other = GPT(GPTConfig.gpt2("gpt2-tiny")).eval(), GPT(GPTConfig.gpt2("gpt2-tiny")).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 9))
    swapping = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with torch.no_grad():
            model(idx)  # packs the Linear weights
            model.load_state_dict(other.state_dict())
            assert torch.allclose(model(idx)[0], other(idx)[0], atol=1e-5)  # the loaded weights, not the old copies
            model.to(torch.bfloat16)
            assert torch.equal(model(idx)[0], other.to(torch.bfloat16)(idx)[0])
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swapping)


def test_the_optimizer_hook_reads_no_parameters_while_nothing_is_packed():
    """Bug guarded: importing minigpt.linear hooks every optimizer's step in the process, and the
    hook looked up each of its parameters (~0.8 µs each, on every step of optimizers that have
    nothing to do with minigpt) even with no copy packed to drop."""
    from minigpt.linear import _forget_stepped

    class NoReading:  # an optimizer whose parameters must not be looked at
        @property
        def param_groups(self):
            raise AssertionError("the hook read the optimizer's parameters with nothing packed")

    forget_packed()
    _forget_stepped(NoReading(), (), {})


@needs_onednn
def test_an_optimizer_step_drops_only_the_copies_of_its_own_weights():
    """A step of one model's optimizer leaves another model's packed copies for its next call."""
    trained, other, x = layer(), layer(), torch.randn(4, 96)
    opt = torch.optim.AdamW(trained.parameters(), lr=0.1, fused=True)
    with torch.no_grad():
        trained(x), other(x)
    F.linear(x, trained.weight, trained.bias).square().sum().backward()  # trained outside Linear.forward
    opt.step()
    assert cache_entry(trained.weight) is None and cache_entry(other.weight) is not None


@needs_onednn
def test_weights_of_one_storage_keep_a_packed_copy_each(monkeypatch):
    """A review: with one copy per storage, two weights of one buffer (slices of a fused weight, a
    matrix and its transpose) evicted each other's copy and were packed again on every call (15x
    slower than keeping both). Each keeps its own copy, and reads its own values."""
    every_fp32_shape_to_onednn(monkeypatch)  # 3 fp32 rows stay on MKL on an Intel CPU (this test failed there)
    torch.manual_seed(0)
    fused = torch.randn(2 * 64, 64)
    a, b = Linear(64, 64, bias=False), Linear(64, 64, bias=False)
    a.weight, b.weight = nn.Parameter(fused[:64]), nn.Parameter(fused[64:])  # views: one storage
    t = Linear(64, 64, bias=False)
    t.weight = nn.Parameter(a.weight.detach().t())  # the same memory, read across
    x = torch.randn(3, 64)
    with torch.no_grad():
        for lin in (a, b, t):
            assert torch.allclose(lin(x), F.linear(x, lin.weight), atol=1e-5)
        copies = [cache_entry(lin.weight).packed for lin in (a, b, t)]
        for lin, copy in zip((a, b, t), copies):
            assert torch.allclose(lin(x), F.linear(x, lin.weight), atol=1e-5)
            assert cache_entry(lin.weight).packed is copy  # kept, not packed again
    assert len(_PACKED[fused.untyped_storage()]) == 3


@needs_onednn
def test_forward_mode_ad_under_no_grad_sees_f_linear():
    """An audit: forward-mode AD does not need grad on, but under no_grad the oneDNN op (which has
    no tangent formula) ran: torch.func.jvp's tangent came out 0, jacfwd's Jacobian all 0, and a
    forward_ad dual's tangent None. They now match grad mode's, and vmap runs without falling
    back to a per-row loop over the op it has no batching rule for."""
    lin, x, v = layer(), torch.randn(4, 96), torch.randn(4, 96)
    want = v @ lin.weight.T  # a linear map's tangent: W v
    _, with_grad = torch.func.jvp(lin, (x,), (v,))
    with torch.no_grad():
        _, without = torch.func.jvp(lin, (x,), (v,))
        with torch.autograd.forward_ad.dual_level():
            dual = torch.autograd.forward_ad.unpack_dual(lin(torch.autograd.forward_ad.make_dual(x, v))).tangent
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "a performance drop because we have not yet implemented the batching rule"
            batched = torch.func.vmap(lin)(x[:, None])
    assert torch.allclose(with_grad, want, atol=1e-5) and torch.equal(without, with_grad)
    assert dual is not None and torch.allclose(dual, want, atol=1e-5)
    assert torch.allclose(batched[:, 0], F.linear(x, lin.weight, lin.bias), atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_flop_counter_counts_inference_as_it_counts_training(grad_mode):
    """An audit: FlopCounterMode has no FLOP formula for the oneDNN op, so a no_grad forward of the
    model counted 0 FLOPs (every dispatch mode now sees F.linear's matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny")).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    with FlopCounterMode(display=False) as training:
        model(idx)
    with grad_mode(), FlopCounterMode(display=False) as inference:
        model(idx)
    assert inference.get_total_flops() == training.get_total_flops() > 0


class RoundedWeight(torch.Tensor):
    """A weight that rounds itself to integers inside F.linear, as fake-quantization tools do."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is F.linear:
            x, w, *rest = args
            return F.linear(x.as_subclass(torch.Tensor), w.as_subclass(torch.Tensor).round(), *rest, **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


@needs_onednn
def test_a_tensor_subclass_weight_is_honoured_without_grad():
    """An audit: a weight subclass that overrides F.linear (fake quantization, weight noise) was
    obeyed with grad on and silently ignored under no_grad, where the oneDNN op multiplied its raw
    values (off by up to 1.5 here)."""
    lin, x = layer(bias=False), torch.randn(3, 96)
    lin.weight = nn.Parameter((lin.weight.detach() * 10).as_subclass(RoundedWeight), requires_grad=False)
    want = x @ lin.weight.as_subclass(torch.Tensor).round().T
    with torch.no_grad():
        got = lin(x).as_subclass(torch.Tensor)
    assert torch.allclose(got, want, atol=1e-4) and cache_entry(lin.weight) is None


@needs_onednn
def test_a_replaced_f_linear_is_called_without_grad_and_the_fast_path_comes_back(monkeypatch):
    """An audit: a spy or instrumentation put in F.linear's place saw every call with grad on and
    none under no_grad. It is now called there too; once F.linear is torch's again, plain
    inference takes the oneDNN path again."""
    every_fp32_shape_to_onednn(monkeypatch)
    lin, x, calls = layer(), torch.randn(4, 96), []
    real = F.linear

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with torch.no_grad():
        monkeypatch.setattr(F, "linear", spy)
        lin(x)
        assert calls == [1] and cache_entry(lin.weight) is None
        monkeypatch.setattr(F, "linear", real)
        lin(x)
        assert calls == [1] and cache_entry(lin.weight) is not None


@needs_onednn
def test_many_row_counts_reach_onednn_as_a_few_padded_shapes(monkeypatch):
    """Rows 1..600 reach oneDNN as at most 32 + 8 per doubling shapes, and each output is F.linear's.
    Before, every row count was a shape of its own, a kernel oneDNN compiled and cached: a batch
    job over many prompt lengths (prefill rows = batch × length) filled its caches and grew memory."""
    import minigpt.linear as linear

    every_fp32_shape_to_onednn(monkeypatch)
    op = torch.ops.mkldnn._linear_pointwise
    seen = set()

    def spy(x, *args):
        seen.add(x.shape[:-1].numel())
        return op(x, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", spy)
    lin = layer()
    with torch.no_grad():
        x = torch.randn(600, 96)
        for rows in range(1, 601):
            assert lin(x[:rows]).shape == (rows, 200)
        for shape in [(33, 96), (4, 25, 96), (599, 96)]:  # padded to 36, 104, 640 rows
            x = torch.randn(shape)
            got, ref = lin(x), F.linear(x, lin.weight, lin.bias)
            assert got.shape == ref.shape and got.is_contiguous()
            assert ((got - ref).abs().max() / ref.abs().max()).item() <= TOL[torch.float32]
    print(f"{len(seen)} shapes for 600 row counts")
    assert len(seen) <= 32 + 8 * 5  # 33..600 spans 5 doublings (32 → 1024)
    assert all(linear.padded_rows(r) == r for r in range(1, 33))  # decode at batch ≤ 32: never padded


@needs_onednn
@pytest.mark.skipif(sys.platform != "linux", reason="reads the process's memory from Linux's /proc")
def test_memory_stays_flat_over_many_prompt_lengths():
    """A process running one layer over 600 row counts (what prefill over many prompt lengths
    does) grows by little, in a fresh process with oneDNN's default cache sizes. Before, each row
    count left a compiled kernel in two caches of 1,024 entries: 313 MiB more (a 2-core Xeon)."""
    code = ("import ctypes, torch, minigpt.linear as L; L.MKL_ROWS = 0\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "m = L.Linear(64, 64); x = torch.randn(640, 64)\n"
            "with torch.no_grad():\n"
            "    m(x[:8]); start = rss()\n"
            "    for rows in range(40, 640): m(x[:rows])\n"
            "ctypes.CDLL('libc.so.6').malloc_trim(0)  # count what is held, not what malloc keeps free\n"
            "print(rss() - start)")
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown = float(done.stdout)
    print(f"RSS grew by {grown:.0f} MiB over 600 row counts")
    assert grown < 150


@needs_onednn
def test_float16_rows_reach_f_linear_padded_on_the_cpu():
    """An audit of a long-lived service: a float16 model on the CPU went to F.linear with every row
    count as it came, and PyTorch runs CPU fp16 products by oneDNN, keeping a kernel per shape:
    plain F.linear over 1,200 row counts grew RSS 221 → 1150 MB. Its rows are padded now as the
    oneDNN path's are (rows 1..600 reach F.linear as at most 32 + 8 per doubling counts, recorded by
    the profiler, which, unlike a replaced F.linear or a dispatch mode, the layer does not watch),
    and each output is F.linear's on the rows given."""
    import minigpt.linear as linear

    lin = layer(torch.float16)
    x = torch.randn(600, 96).half()
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for rows in range(1, 601):
            assert lin(x[:rows]).shape == (rows, 200)
    seen = {event.input_shapes[0][0] for event in prof.events() if event.name == "aten::linear"}
    print(f"{len(seen)} row counts reach F.linear for 600")
    assert seen == {linear.padded_rows(rows) for rows in range(1, 601)} and len(seen) <= 32 + 8 * 5
    with torch.no_grad():
        for shape in [(33, 96), (4, 25, 96)]:  # padded to 36 and 104 rows
            x = torch.randn(shape).half()
            got, ref = lin(x), F.linear(x, lin.weight, lin.bias)
            assert got.shape == ref.shape and got.is_contiguous()
            assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-3  # (another kernel may sum in another order)


@needs_onednn
def test_a_compiled_training_step_compiles_once_whatever_evaluations_packed():
    """An audit: Linear.forward read the module-level _PACKED before asking whether torch.compile was
    tracing it, so the compiler guarded on whether _PACKED was empty: an evaluation (grad off) packs
    the weights, and the next training step was compiled again (4 graphs where 2 do, in a compiled
    `train_loop` of 20 steps). Now a traced call never reads it: one graph with grad on, one without."""
    graphs = []

    def counting(gm: torch.fx.GraphModule, inputs):  # a backend that counts the graphs it is given
        graphs.append(gm)
        return gm.forward

    lin, x = layer(), torch.randn(3, 5, 96)
    compiled = torch.compile(lin, backend=counting)
    forget_packed()
    compiled(x).sum().backward()  # a training step: nothing packed yet
    with torch.no_grad():
        compiled(x)  # an evaluation: packs the weight (the oneDNN op runs)
    assert cache_entry(lin.weight) is not None
    compiled(x).sum().backward()  # a training step again, with a packed copy in _PACKED
    assert len(graphs) == 2, [g.code for g in graphs]


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300, n_positions=64)).eval()


@needs_onednn
def test_peft_merge_and_unload_is_seen_by_the_next_no_grad_call():
    """An audit: PEFT's merge_and_unload adds each LoRA delta through `weight.data`, which bumps no
    version counter, so a model that had run inference kept multiplying by its old packed copies:
    the merged model's no_grad logits were the unmerged base's (0.83 off the LoRA model's). The
    fingerprint kept with each copy sees a write that changes the whole weight."""
    import peft

    model, idx = tiny_gpt(), torch.randint(0, 300, (2, 12))
    config = peft.LoraConfig(r=4, target_modules=["c_attn", "c_fc"], init_lora_weights=False)  # random B: a real delta
    lora = peft.get_peft_model(model, config).eval()
    with torch.no_grad():
        want = lora(idx)[0]  # the base weights are packed here
        got = lora.merge_and_unload()(idx)[0]
    print(f"merged vs LoRA logits: max |Δ| = {(got - want).abs().max():.2e}")
    assert torch.allclose(got, want, atol=1e-5)


@needs_onednn
def test_dense_writes_around_the_version_counter_are_seen():
    """An audit: `w.data.add_(delta)` (an EMA, a merged adapter) and a write through `w.numpy()`
    bump no version counter, and the packed copy of the old values went on being served
    (logits 0.33 off after halving the LM head through NumPy). Both now pack the weight again."""
    lin, x = layer(), torch.randn(4, 96)  # 4 rows: oneDNN's, even on Intel (MKL_ROWS)
    with torch.no_grad():
        lin(x)
        lin.weight.data.add_(torch.randn_like(lin.weight))  # a new counter: lin.weight's stays
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)
        lin.weight.detach().numpy()[:] *= 0.5  # memory PyTorch never hears of being written
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)
    model, idx = tiny_gpt(), torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        model(idx)
        model.lm_head.weight.detach().numpy()[:] *= 0.5  # the audit's case: the (tied) LM head
        got = model(idx)[0]
    assert torch.allclose(got, model(idx)[0].detach(), atol=1e-5)  # grad on: F.linear, the reference


@needs_onednn
def test_a_head_pruned_through_data_is_seen():
    """A review: the first fingerprint, an 8 × 8 grid, read every 96th column of a 768-wide weight,
    and so never a column of heads 2, 5, 8 or 11 (64 each): zeroing one through `.data`, as
    hand-written head pruning does, was served stale. Its 64 elements now lie in 64 rows and 64
    columns of their own, 12 apart here: every head of GPT-2 124M holds some (not promised in
    general: gpt2-xl's c_attn rows lie 75 apart, more than a head's 64)."""
    torch.manual_seed(0)
    lin, x = Linear(768, 768), torch.randn(4, 768)  # attn.c_proj's shape in GPT-2 124M
    with torch.no_grad():
        lin(x)
        for head in range(12):
            lin.weight.data[:, 64 * head:64 * (head + 1)] = 0.0  # the head's input columns
            assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4), head


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("n_in, n_out", [(16, 0), (0, 16)])
def test_an_empty_weight_runs_on_f_linear(n_in, n_out, mode, dtype):
    """A review: Linear(16, 0) under no_grad failed in oneDNN ("could not create a primitive
    descriptor"), and the fingerprint's steps divided by its 0 rows; a weight made under
    inference_mode reached oneDNN before the check. Nothing to pack: F.linear."""
    with mode():
        lin, x = Linear(n_in, n_out).to(dtype), torch.randn(4, n_in, dtype=dtype)
        assert lin(x).shape == (4, n_out)


@needs_onednn
def test_a_write_through_data_outside_the_fingerprint_still_needs_forget_packed():
    """What the fingerprint does not promise (minigpt/linear.py, README): a write through `.data` to a
    few elements it does not read is not seen, and the old copy is served until forget_packed().
    If this test fails because the write was seen, the docs undersell the check: update them."""
    from minigpt.linear import fingerprint_at

    lin, x = layer(), torch.randn(4, 96)
    # (200, 96): 64 elements, the i-th at row 3i, column i
    assert fingerprint_at(lin.weight) == (64, 3 * 96 + 1)
    with torch.no_grad():
        before = lin(x)
        lin.weight.data[1, 1] += 100.0  # row 1, column 1: not in the fingerprint
        assert torch.equal(lin(x), before)  # stale, as documented
        forget_packed()
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-4)


@needs_onednn
def test_jit_trace_under_no_grad_records_f_linear():
    """An audit: torch.jit.trace under torch.no_grad (the usual way to trace for inference) died
    inside the oneDNN op ("unsupported input list type: Scalar?"). A trace now records F.linear,
    with no packed weight baked in: it gives the eager logits and follows a later weight change."""
    model, idx = tiny_gpt(), torch.randint(0, 300, (2, 12))

    class Logits(nn.Module):
        def __init__(self, gpt: GPT):
            super().__init__()
            self.gpt = gpt

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.gpt(idx)[0]

    with torch.no_grad():
        traced = torch.jit.trace(Logits(model), (idx,), check_trace=False)
        graph = str(traced.inlined_graph)
        assert "mkldnn" not in graph and graph.count("aten::linear") == 4 * 2 + 1  # 2 blocks and the LM head
        assert torch.allclose(traced(idx), model(idx)[0], atol=1e-5)
        model.transformer.h[0].mlp.c_fc.weight.mul_(2)
        assert torch.allclose(traced(idx), model(idx)[0], atol=1e-5)
