"""Row parameters: a sampling knob is one number for every row, or a (B,) tensor of one per row.

Where it sits: every knob of `logits → penalties → n-gram ban → filters → draw` (the three
penalties; temperature, top_k, top_p, min_p, typical_p) is a `Param`. Both minigpt/penalties.py and
minigpt/sampling.py take them, so what they share lives here, below both:
- `check_param` (a value in its allowed range; the error names the argument and the range) and
  `check_logits` (one row of logits per sequence, (B, V)): the checks their entry points run once;
- `per_row` spreads the parameters over the rows a prompt becomes (its beams, or its n samples):
  (B,) → (B·copies,);
- `as_column` shapes one for broadcasting over the vocabulary: (B,) → (B, 1); a number stays a float;
- `as_tensor` makes a number a (B,) tensor too, for code that takes tensors alone: the fused
  kernel, and the compiled penalties (so numbers and per-row values share one graph).
- `is_on` says whether a parameter changes anything (warnings, the fused kernel's reach, the
  penalties' counts), and `shown` how an error or warning writes one.

The ranges themselves sit with the code they guard: `PARAM_RANGES` in minigpt/sampling.py,
`PENALTY_RANGE` in minigpt/penalties.py.
"""
from __future__ import annotations

import numbers

import torch

from minigpt.checks import is_bool

Param = float | int | torch.Tensor  # one value for every row, or a (B,) tensor of per-row values


def is_on(value: Param, off: float) -> bool:
    """Whether a parameter changes anything: not its `off` value, or a tensor (values per row are no
    accident, and reading them to see would be a host sync)."""
    return isinstance(value, torch.Tensor) or value != off


def shown(name: str, value: Param) -> str:
    """A parameter as a warning or an error writes it: `top_p=0.9`, or `top_p=(a tensor)`."""
    return f"{name}={'(a tensor)' if isinstance(value, torch.Tensor) else value}"


def check_param(name: str, value: Param, ok, allowed: str) -> None:
    """Raise for a value that is not a number or tensor (TypeError) or not `ok` (ValueError)."""
    # A (B,) tensor is checked too; the generate loop calls this once before decoding, so the
    # host sync it costs on a GPU is paid once, not once per token. `ok` says what is allowed, so
    # NaN, which fails every comparison, is rejected; an open end at inf must say `< inf` itself.
    if not isinstance(value, (numbers.Real, torch.Tensor)):  # a list would fail in `ok` as "'>=' not supported"
        raise TypeError(f"{name} must be a number, or a (B,) tensor of one value per row (torch.tensor([...])), "
                        f"got {type(value).__name__}")
    if is_bool(value):  # True would pass for 1, as it does for no other argument (minigpt/checks.py)
        raise TypeError(f"{name} must be a number, got the bool {value}")
    bad = not bool(ok(value).all()) if isinstance(value, torch.Tensor) else not ok(value)
    if bad:
        raise ValueError(f"{name} must be in {allowed}, got {value}")


def check_logits(logits: torch.Tensor) -> None:
    """The checked entry points (filter_logits, sample, the penalties) take one row of logits per
    sequence, (B, V), with a parameter that may hold one value per row; the public filters alone
    also take (V,) or (B, T, V) logits, with number parameters (sampling.check_filter_input)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be (B, V), one row per sequence, got {shape}: for one row use "
                         "logits[None], for a model's (B, T, V) output its last position logits[:, -1]")
    if logits.size(1) == 0:  # argmax and the kernel's launch would fail, naming neither
        raise ValueError(f"logits have no vocabulary: shape {tuple(logits.shape)}, V = 0")


def per_row(batch_size: int, copies: int = 1, **params: Param) -> dict[str, Param]:
    """The parameters as the rows need them: a tensor holds one value per prompt (or row of logits),
    and each goes to the `copies` rows a prompt becomes (its beams, or its n samples); a 0-d tensor
    is spread over every row, as a number is. ValueError for a tensor of another length."""
    for name, value in params.items():
        if isinstance(value, torch.Tensor) and value.dim() == 0:
            params[name] = value.reshape(1).expand(batch_size * copies)  # () → (B·copies,)
        elif isinstance(value, torch.Tensor) and value.numel() != batch_size:
            raise ValueError(f"{name} has {value.numel()} values (shape {tuple(value.shape)}); a tensor "
                             f"parameter holds one per prompt (row of logits): {batch_size}")
        elif isinstance(value, torch.Tensor) and copies > 1:
            params[name] = value.reshape(-1).repeat_interleave(copies)  # rows b·copies ... b·copies + copies - 1
    return params


def as_column(value: Param, logits: torch.Tensor) -> Param:
    """One value per row, shaped to broadcast over the vocabulary of logits (B, V): a (B,) tensor
    becomes an fp32 (B, 1) on the logits' device; a number becomes a Python float."""
    if isinstance(value, torch.Tensor):
        return value.to(device=logits.device, dtype=torch.float32).reshape(-1, 1)
    return float(value)  # a NumPy scalar too: with a tensor, its `<` or `&` would hand the op to NumPy


def as_tensor(value: Param, batch_size: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One value per row as a (B,) tensor of `dtype` on `device`, whether given as a number or a tensor."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype).reshape(batch_size).contiguous()
    return torch.full((batch_size,), value, dtype=dtype, device=device)
