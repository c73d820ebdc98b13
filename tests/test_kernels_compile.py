"""The fused sampling kernels compile for a real GPU (sm_90, Hopper), on a machine without one.

Triton's interpreter (tests/test_fused_sampling.py) runs the kernels' logic on CPU, but it never
lowers them: a kernel can pass there and still fail to compile for a GPU (a type the compiler
rejects, a loop-carried value whose type changes). Triton compiles ahead of time for a named target
without a device (the wheel ships ptxas), so this file runs fused_sample's real host code with
every launch recorded instead of run, then compiles each recorded launch, with its arguments'
types and constexprs, for sm_90. It prints each kernel's registers and checks, from the machine
code, that no register spills inside a loop.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None or sys.platform != "linux",
                                reason="triton (Linux only) compiles the kernels")
POINTER_TYPES = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.int32: "*i32",
                 torch.int64: "*i64"}


class RecordedLaunch:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kwargs)` records, runs nothing."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((args, kwargs))


def record_launches(monkeypatch, B: int, V: int, dtype: torch.dtype, splits: int) -> list:
    """fused_sample's launches for a (B, V) batch: [(kernel, args, kwargs), ...]."""
    import minigpt.kernels.sampling as one
    import minigpt.kernels.sampling_split as split

    recorders = []
    for module, name in [(one, "_fused_sample_kernel"), (split, "_stats_kernel"), (split, "_hist_kernel"),
                         (split, "_copy_kernel"), (split, "_finish_kernel")]:
        recorders.append(RecordedLaunch(getattr(module, name)))
        monkeypatch.setattr(module, name, recorders[-1])
    monkeypatch.setattr(one, "_check_inputs", lambda logits, params: None)  # CPU tensors stand in for CUDA's
    one.fused_sample(torch.zeros(B, V, dtype=dtype), temperature=torch.ones(B), top_k=torch.zeros(B, dtype=torch.int32),
                     top_p=torch.ones(B), min_p=torch.zeros(B), seed=torch.zeros(1, dtype=torch.long),
                     offset=torch.zeros(1, dtype=torch.long), splits=splits)
    return [(r.kernel, args, kwargs) for r in recorders for args, kwargs in r.launches]


def compile_for_hopper(kernel, args: tuple, kwargs: dict, max_registers: int | None = None) -> tuple[str, str]:
    """Compile one recorded launch for sm_90; returns ptxas's resource line (registers, stack) and
    the machine code (SASS). max_registers caps the registers per thread (a test of the check)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kwargs = dict(kwargs)
    options = {"num_warps": kwargs.pop("num_warps", 4)} | ({"maxnreg": max_registers} if max_registers else {})
    values = dict(zip(kernel.arg_names, args)) | kwargs
    signature, constexprs = {}, {}
    for param, name in zip(kernel.params, kernel.arg_names):
        value = values[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = POINTER_TYPES[value.dtype]
        else:
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    cubin = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"minigpt_{kernel.__name__}_{os.getpid()}.cubin")
    with open(cubin, "wb") as f:
        f.write(compiled.asm["cubin"])
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    try:
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", cubin], capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    finally:
        os.remove(cubin)
    return next((line.strip() for line in usage.splitlines() if "REG:" in line), "(no resource line)"), sass


INSTRUCTION = re.compile(r"/\*([0-9a-f]+)\*/\s+(.*?)\s*;")  # SASS: /*0a30*/ @P0 BRA 0x1c40 ;
JUMP = re.compile(r"\b(?:BRA|JMP|CALL|WARPSYNC\.COLLECTIVE)\S*\s(?:.*,\s*)?0x([0-9a-f]+)$")
SPILL = re.compile(r"(?:@!?U?P\w+\s+)?(?:STL|LDL)\b")  # a store to / load from local memory (the stack)


def spills_in_loops(sass: str) -> list[str]:
    """The addresses of the spill instructions that lie on a cycle of the kernel's control flow.

    A spill outside every loop is a store and a load per program: nanoseconds. Inside a loop it is
    a trip to memory per iteration. Addresses alone cannot tell: ptxas lays cold blocks out after
    the code that jumps back from them. So this follows the jumps: each instruction leads to the
    next one (unless it is an unconditional jump or exit) and to its jump's target; a return leads
    back to every call's next instruction (so with two calls of one subroutine it finds a cycle
    that no run takes: a false alarm, never a miss). An indirect jump (BRX, JMX) it cannot follow:
    refused."""
    code = [(int(at, 16), text) for at, text in INSTRUCTION.findall(sass)]
    assert code, f"no SASS instructions found in cuobjdump's output:\n{sass[:2000]}"
    returns_to = [code[i + 1][0] for i, (_, text) in enumerate(code[:-1]) if re.search(r"\bCALL\b", text)]
    successors = {}
    for i, (at, text) in enumerate(code):
        opcode = text.split()[1 if text.startswith("@") else 0]
        after = [code[i + 1][0]] if i + 1 < len(code) else []
        unconditional = not text.startswith("@") and "," not in text
        assert not opcode.startswith(("BRX", "JMX")), f"an indirect jump at {at:#x} ({text}): check its targets by hand"
        jump = JUMP.search(text)
        if jump:
            successors[at] = [int(jump.group(1), 16)] + ([] if unconditional and opcode in ("BRA", "JMP") else after)
        elif opcode.startswith("RET"):
            successors[at] = returns_to + ([] if unconditional else after)
        elif opcode == "EXIT" and unconditional:
            successors[at] = []
        else:
            successors[at] = after

    def on_a_cycle(start: int) -> bool:
        seen, todo = set(), list(successors[start])
        while todo:
            at = todo.pop()
            if at == start:
                return True
            if at not in seen:
                seen.add(at)
                todo.extend(successors.get(at, []))
        return False

    return [hex(at) for at, text in code if SPILL.match(text) and on_a_cycle(at)]


# The splits a CUDA graph takes for GPT-2's vocabulary: 32 at batch 1–4, 16 at 5–8 (default_splits).
@pytest.mark.parametrize("dtype,splits", [(torch.float32, 1), (torch.bfloat16, 1), (torch.float32, 32),
                                          (torch.bfloat16, 32), (torch.float32, 16), (torch.bfloat16, 16)],
                         ids=["fp32-one-program", "bf16-one-program", "fp32-split-32", "bf16-split-32",
                              "fp32-split-16", "bf16-split-16"])
def test_kernels_compile_for_sm90(monkeypatch, dtype: torch.dtype, splits: int):
    launches = record_launches(monkeypatch, B=1, V=50257, dtype=dtype, splits=splits)
    assert [k.__name__ for k, _, _ in launches] == (["_fused_sample_kernel"] if splits == 1 else
                                                    ["_stats_kernel", "_hist_kernel", "_hist_kernel", "_copy_kernel",
                                                     "_finish_kernel"])
    for kernel, args, kwargs in launches:
        usage, sass = compile_for_hopper(kernel, args, kwargs)
        print(f"{kernel.__name__} ({dtype}, splits={splits}): {usage}")
        stack = int(re.search(r" STACK:(\d+) ", usage).group(1))
        # README: at 16 warps a thread has 128 registers, and the biggest kernels sit there. Some
        # ptxas releases (Triton 3.3–3.8 but 3.6) keep a value or two (8 bytes) on the stack across
        # the search; what matters is that no spill sits in a loop, and that it stays that small.
        assert " LOCAL:0 " in usage and stack <= 16, f"{kernel.__name__} spills registers: {usage}"
        assert spills_in_loops(sass) == [], f"{kernel.__name__} spills registers inside a loop: {usage}"


def test_spills_in_loops_finds_a_spill_inside_a_loop(monkeypatch):
    """The check above has teeth: capped at 64 registers, the one-program kernel spills inside its
    streaming loops, and spills_in_loops names those spills."""
    (kernel, args, kwargs), = record_launches(monkeypatch, B=1, V=50257, dtype=torch.float32, splits=1)
    usage, sass = compile_for_hopper(kernel, args, kwargs, max_registers=64)
    assert "REG:64 " in usage and " STACK:0 " not in usage, usage
    assert len(spills_in_loops(sass)) > 10


def test_spills_in_loops_follows_calls_and_refuses_what_it_cannot_follow():
    """A review: a spill in a subroutine called from a loop is inside that loop (a return leads back
    to the call); an indirect jump cannot be followed, and no instructions at all (a failed dump)
    is no pass. (No kernel of minigpt's has a call or an indirect jump today, Triton 3.3 to 3.9.)"""
    loop_calls = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   CALL.REL.NOINC 0x50 ;
        /*0020*/               @P0 BRA 0x10 ;
        /*0030*/                   EXIT ;
        /*0040*/                   BRA 0x40;
        /*0050*/                   STL [R1], R2 ;
        /*0060*/                   RET.REL.NODEC R8 0x0 ;
    """
    assert spills_in_loops(loop_calls) == ["0x50"]
    assert spills_in_loops(loop_calls.replace("@P0 BRA 0x10", "NOP")) == []  # called once, outside any loop
    with pytest.raises(AssertionError, match="an indirect jump at 0x20"):
        spills_in_loops(loop_calls.replace("@P0 BRA 0x10", "BRX R4 -0x30"))
    with pytest.raises(AssertionError, match="no SASS instructions"):
        spills_in_loops("")
