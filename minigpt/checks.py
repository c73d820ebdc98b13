"""Integer, bool and rate arguments: one check, so that the same slip gets the same error everywhere.

Where it sits: under every module that takes a count, a size or a token id (the config, the
tokenizer, the samplers, training, fine-tuning). A value of the wrong kind (a float, a string,
None, a bool) is a TypeError; the caller then checks the range itself, as a ValueError that
names the range, since only it knows the range. A dropout rate is the exception: its range,
[0, 1), is the same everywhere, so `check_rate` checks both. It imports no torch, so the
tokenizer's worker processes stay light. And a warning's stacklevel that points at the user's
line, not minigpt's (`caller_stacklevel`), and the first few names of a list an error names
(`first_few`: the missing tensors, a file's labels), so that every such list ends alike. And
whether an error is a device running out of memory (`is_out_of_memory`), which each caller words.
"""
from __future__ import annotations

import numbers
import operator
import os
import sys
from collections.abc import Sequence


# How the allocators that raise no torch.OutOfMemoryError say they have no memory, as a RuntimeError
# of no class of its own: the CPU's "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator:
# can't allocate memory: you tried to allocate N bytes" on Linux and macOS, "... not enough memory: ..."
# on Windows; Apple's MPS "MPS backend out of memory (MPS allocated: ...). Tried to allocate N GiB ...".
ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory",
                      "MPS backend out of memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a device's allocator running out: torch.OutOfMemoryError (a CUDA GPU's), or the
    CPU's or Apple MPS's RuntimeError (`ALLOCATOR_FAILURES`); not another failure (torch's "Storage size
    calculation overflowed" for a size past 2**63 bytes among them), which should stay what it is."""
    import torch  # here, not above: this module imports no torch; an error of torch's means it is loaded
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(failure in str(err) for failure in ALLOCATOR_FAILURES))


def is_bool(value) -> bool:
    """A bool, NumPy bool, or bool tensor or array: a flag, though Python counts True as 1."""
    return isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool")


def is_int(value) -> bool:
    """A plain int, not a bool: what a count read from a JSON or pickled file must be (JSON's true
    is Python's True, which isinstance counts as the int 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_flag(name: str, value) -> None:
    """A switch must be a bool: "False" (a non-empty string) or 0.5 would read as True."""
    if not is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def as_switch(name: str, value) -> bool:
    """A switch (`check_flag`: a NumPy bool too, not a bool array of several) as a plain bool,
    which JSON can write (a NumPy bool it cannot)."""
    if getattr(value, "ndim", 0):  # is_bool reads the dtype alone
        raise TypeError(f"{name} must be True or False, got {value!r}")
    check_flag(name, value)
    return bool(value)


def as_count(name: str, value) -> int:
    """An integer argument as a plain int (a NumPy integer or a one-element integer tensor too).

    A float (2.0 or 2.5), a string or None would fail later, deep inside torch ("full(): argument
    'size'...") or in a comparison; a bool is no count, though Python takes True for 1:
    max_new_tokens=True is a slip, not one token. Each is a TypeError naming `name`."""
    if is_bool(value):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def as_real(name: str, value) -> float:
    """A real-number argument (an int, a float, a NumPy float) as a plain float, which JSON can
    write (a NumPy float32 it cannot). A string ("3e-4"), None or a tensor is a TypeError naming
    `name`, and so is a bool, though Python takes True for 1."""
    if is_bool(value):
        raise TypeError(f"{name} must be a number, got the bool {value!r}")
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int past float's range (10**400)
        raise ValueError(f"{name} must be a finite number, got an integer of {len(str(abs(value)))} digits") from None


def check_rate(name: str, value) -> float:
    """A dropout rate (`as_real`) in [0, 1), the share of activations zeroed. Out of range (NaN
    too) is a ValueError: at 1.0 every activation is zeroed and nothing is learned."""
    rate = as_real(name, value)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return rate


TORCH_DECORATOR = os.path.join("torch", "utils", "_contextlib.py")  # where @torch.no_grad() calls the function


def caller_stacklevel() -> int:
    """The stacklevel of the first frame outside minigpt: the user's call, however deep in minigpt
    (generate → stream → check_arguments, generate_texts → ...) the warning is raised. The frame
    of a torch decorator around a minigpt function (@torch.no_grad()) is passed over too."""
    here, frame, level = os.path.dirname(os.path.abspath(__file__)), sys._getframe(1), 1
    while frame is not None and (os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep)
                                 or frame.f_code.co_filename.endswith(TORCH_DECORATOR)):
        frame, level = frame.f_back, level + 1
    return level


LISTED = 5  # names an error lists before "... and N more"


def first_few(names: Sequence[object], n: int = LISTED, quoted: bool = False) -> str:
    """The first `n` of `names`, comma-separated, then how many more: "a, b, c, d, e, ... and 7 more";
    "none" for no names. An error that names what is wrong stays a line, not the whole model or
    file, and still says how many there are. Each name as str() writes it (class ids: 2, 3), or
    `quoted`, as repr() does ('transformer.wte.weight', 'very good'): names a user would copy, where
    a space or a comma inside one would otherwise read as two. No brackets: "... and 7 more" is no
    Python list."""
    if not names:
        return "none"
    more = f", ... and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(map(repr if quoted else str, names[:n])) + more
