"""Reading and writing GPT-2 checkpoints in Hugging Face's layout.

A directory holds `config.json` and `model.safetensors` (or shards listed in
`model.safetensors.index.json`). OpenAI's GPT-2 was written in TensorFlow with "Conv1D" layers,
which store weights as (in, out); `nn.Linear` stores (out, in), so those four matrices are
transposed on the way in and out. Everything else is a key-for-key copy.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from minigpt.config import GPTConfig
from minigpt.model import GPT

# The four Conv1D weights per block, stored (in, out) in HF files.
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Old HF files carry the causal mask as buffers; they are constants, not weights.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / s for s in shards]
    elif single.exists():
        files = [single]
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor model.safetensors.index.json")
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"shard {f.name} listed in {index.name} is missing from {path}")
    return files


def _read_tensors(files: list[Path]):
    """Yield (name, tensor) one at a time; safe_open memory-maps, so only the current tensor is read."""
    for f in files:
        try:
            with safe_open(f, framework="pt") as sf:
                for name in sf.keys():
                    yield name, sf.get_tensor(name)
        except SafetensorError as e:
            raise ValueError(f"{f} is not a readable safetensors file (truncated or corrupt?): {e}") from None


def load_gpt(path: str | os.PathLike, dtype: torch.dtype | None = None, device=None) -> GPT:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    config = GPTConfig.from_json(path / "config.json")
    # Build the model on the "meta" device: shapes only, no memory. The real tensors are then
    # *assigned* from the file, so at no point do two full copies of the weights exist.
    with torch.device("meta"):
        model = GPT(config)
    expected = {k: p.shape for k, p in model.state_dict().items() if k != "lm_head.weight"}

    state: dict[str, torch.Tensor] = {}
    lm_head = None
    for name, t in _read_tensors(_weight_files(path)):
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name == "lm_head.weight":  # an explicit, untied copy; GPT-2 ties it to wte
            lm_head = t
            continue
        key = name if name.startswith("transformer.") else "transformer." + name
        if key not in expected:
            raise ValueError(f"unexpected tensor {name!r} in {path}: GPT-2 has no such weight")
        if key.endswith(CONV1D_SUFFIXES):
            t = t.t()  # Conv1D (in, out) → Linear (out, in)
        if t.shape != expected[key]:
            raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(expected[key])} for this config")
        state[key] = t.to(device=device, dtype=dtype or t.dtype).contiguous()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"checkpoint {path} is missing {len(missing)} tensor(s): {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if lm_head is not None and not torch.equal(lm_head.to(state["transformer.wte.weight"]), state["transformer.wte.weight"]):
        raise ValueError(f"{path} has an lm_head.weight that differs from wte.weight; GPT-2 ties them")

    model.load_state_dict(state, strict=False, assign=True)  # lm_head is the tied wte, not in `state`
    model.lm_head.weight = model.transformer.wte.weight  # re-tie: assign replaced wte's Parameter
    return model.eval()


def save_gpt(model: GPT, path: str | os.PathLike, architecture: str = "GPT2LMHeadModel") -> None:
    """Write config.json + model.safetensors, each to a temp name first and then renamed.

    A crash midway leaves the previous checkpoint (if any) intact: a reader never sees a half
    written file. The weights are renamed into place first, then the config.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to wte; HF re-ties it on load
        if key.endswith(CONV1D_SUFFIXES):
            t = t.t()
        tensors[key] = t.detach().contiguous().cpu()
    write_safetensors(tensors, path / "model.safetensors")
    model.config.save_json(path / "config.json", architecture=architecture, extra={"torch_dtype": str(next(model.parameters()).dtype).removeprefix("torch.")})


def write_safetensors(tensors: dict[str, torch.Tensor], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})  # HF requires format=pt
    os.replace(tmp, dest)
