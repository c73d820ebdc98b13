"""Reading and writing GPT-2 checkpoints in Hugging Face's layout.

Where it sits: a checkpoint directory → `load_gpt` → `GPT` (and back with `save_gpt`). The
directory holds `config.json` and `model.safetensors`, or, for big models, shards listed in
`model.safetensors.index.json`. OpenAI's GPT-2 was written in TensorFlow with "Conv1D" layers,
which store weights as (in, out); `nn.Linear` stores (out, in), so those four matrices are
transposed on the way in and out. Everything else is a key-for-key copy.

Not handled: PyTorch `.bin` pickles (a pickle may run code when loaded, every GPT-2 on the Hub
also ships safetensors, and the error says how to convert one) and TensorFlow checkpoints.
safetensors has no checksum, so a file whose bytes were flipped but whose length is intact loads;
`minigpt download` checks sha256 for that reason.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open

from minigpt.checks import first_few
from minigpt.config import (CHECKPOINTS, DOWNLOADS, GPT2_SIZES, INDEX_NAME, PICKLE_NAME, WEIGHTS_NAME, GPTConfig,
                            architectures_of, gpt2_name, shipped_path)
from minigpt.download import find_gpt2, hub_hint
from minigpt.files import (atomic_path, check_regular_file, fsync_file, no_follow, read_json, refuse_lfs_pointer,
                           save_lock, temp_path)
from minigpt.lora import ADAPTER_CONFIG, load_adapted
from minigpt.model import GPT, same_matrix

GENERATION_CONFIG_NAME = "generation_config.json"  # transformers' token ids for generate; a save removes it
# The four Conv1D weights per block, stored (in, out) in HF files.
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Old HF files carry the causal mask as buffers; they are constants, not weights.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# Task heads other GPT-2 classes put on top of the same body and tied LM head: loading one as a
# language model leaves its head out, as transformers' GPT2LMHeadModel.from_pretrained does.
TASK_HEADS = {"GPT2DoubleHeadsModel": "multiple_choice_head.", "GPT2ForTokenClassification": "classifier.",
              "GPT2ForQuestionAnswering": "qa_outputs."}


def weight_files(path: Path) -> list[Path]:
    """The safetensors file(s) of the checkpoint directory `path`, in the order to read them.

    `model.safetensors` if it exists (a single file wins over an index, as in transformers), else
    every shard that `model.safetensors.index.json` lists, each once, sorted by name. Raises
    FileNotFoundError if there is neither file, one is a broken link or a listed shard is missing,
    and ValueError for a weights file that is no regular file (a FIFO, a device), an index that is
    not UTF-8 JSON, has no `weight_map`, or names a shard that is no file inside `path`
    (`check_shard_name`). Shared by `load_gpt` and `GPTClassifier.from_pretrained`.
    """
    single, index = path / WEIGHTS_NAME, path / INDEX_NAME
    refuse_broken_link(single)
    if single.exists():
        check_regular_file(single)  # a FIFO there would hang the load, a device (/dev/zero) never end
        return [single]
    refuse_broken_link(index)
    if not index.exists():
        pickled = [p.name for p in (path / PICKLE_NAME, path / f"{PICKLE_NAME}.index.json") if p.exists()]
        hint = (f"; it holds {pickled[0]}, PyTorch's pickle format, which minigpt does not read: re-save it as "
                f"safetensors with transformers (GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR))") if pickled \
            else download_hint(path)
        raise FileNotFoundError(f"{path} has neither {WEIGHTS_NAME} nor {INDEX_NAME}{hint}")
    contents = read_json(index)  # not UTF-8, or not JSON: a ValueError that names the file
    weight_map = contents.get("weight_map") if isinstance(contents, dict) else None  # tensor name → shard file name
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index} is not a valid safetensors index (needs a 'weight_map' object: tensor name → shard file name)")
    first_tensor = {}  # each shard, and the first tensor listed in it: the entry an error names
    for tensor, shard in weight_map.items():
        check_shard_name(index, tensor, shard)
        first_tensor.setdefault(shard, tensor)
    for shard, tensor in first_tensor.items():
        refuse_broken_link(path / shard)
        if not (path / shard).exists():
            raise FileNotFoundError(f"shard {shard} listed in {INDEX_NAME} is missing from {path}")
        if not (path / shard).is_file():  # a folder: safetensors' error, "No such device", named no file; a FIFO hung
            raise ValueError(f"{index} lists tensor {tensor!r} in shard {shard!r}, which is not a regular file")
    return sorted(path / shard for shard in first_tensor)


def check_shard_name(index: Path, tensor: str, shard: object) -> None:
    """Refuse a shard name from `index` that is not a file name inside its folder. The index comes
    with the model (from the Hub, or anyone), so "../x" or "/home/me/x" must not make the loader read
    a file of the reader's choosing. Checked by the name's parts, not by resolving it, as transformers
    does (hub.py's _check_shard_filenames_stay_in_model_dir): in the Hugging Face cache each file of
    a model's folder is a symlink into the blobs/ folder beside it, so resolved, every shard is outside."""
    if not isinstance(shard, str) or not shard:  # "" would name the folder itself; 5 failed as PosixPath / int
        raise ValueError(f"{index} lists tensor {tensor!r} in shard {shard!r}; a shard is the name of a "
                         f"safetensors file in {index.parent}")
    if Path(shard).anchor or ".." in Path(shard).parts:
        raise ValueError(f"{index} lists tensor {tensor!r} in shard {shard!r}, which points outside the checkpoint "
                         f"folder {index.parent}; a shard is the name of a file inside it")


def refuse_broken_link(file: Path) -> None:
    """A symbolic link to nothing does not exist, as far as `Path.exists` says: name it as the broken
    link it is, and where it points, not as a file that is missing (a model folder copied without the
    blobs/ that the Hugging Face cache links its files into, say)."""
    if file.is_symlink() and not file.exists():
        raise FileNotFoundError(f"{file} is a broken symbolic link: it points to {os.readlink(file)}, which does not exist")


@contextmanager
def open_safetensors(file: Path) -> Iterator:
    """safe_open(file), with a file it cannot read (truncated, corrupt, a Git LFS pointer) a
    ValueError that names it."""
    try:
        with safe_open(file, framework="pt") as sf:
            yield sf
    except SafetensorError as e:
        refuse_lfs_pointer(file)
        raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupt?): {e}") from None


def read_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time; safe_open memory-maps, so only the current tensor is read."""
    for f in files:
        with open_safetensors(f) as sf:
            for name in sf.keys():
                yield name, sf.get_tensor(name)


def stored_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the files' headers alone (no tensor is read): what `load_gpt`
    compares config.json with before it builds a model. A tensor in two shards is refused here,
    naming both: one of the two would be dropped unseen."""
    shapes, shard_of = {}, {}
    for f in files:
        with open_safetensors(f) as sf:
            for name in sf.keys():
                if name in shard_of:
                    raise ValueError(f"tensor {name!r} is in two shards of {f.parent}, {shard_of[name].name} and "
                                     f"{f.name}; a checkpoint holds each tensor once")
                shard_of[name] = f
                shapes[name] = tuple(sf.get_slice(name).get_shape())
    return shapes


# A tensor of block N, as "transformer.h.N...." or OpenAI's "h.N....".
BLOCK_NAME = re.compile(r"(?:transformer\.)?h\.(\d+)\.")


def check_config_fits_weights(path: Path, config: GPTConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a config.json whose depth or embedding sizes the weights' headers (`stored_shapes`)
    contradict, before a model is built from it. Even on the meta device, building costs time and
    memory with n_layer (20,000 blocks: 54 s and 1 GB) and fails on sizes past torch's (n_embd=10**9),
    so a config.json that claims a million blocks for a file of two ran for minutes and GBs before
    the missing tensors were counted. What is checked: as many blocks (h.0 ... h.N) as n_layer, and
    the embeddings' shapes (vocab_size, n_positions, n_embd); the rest `read_weights` checks, tensor by tensor."""
    n_blocks = 1 + max((int(m[1]) for name in shapes if (m := BLOCK_NAME.match(name))), default=-1)
    if n_blocks != config.n_layer:
        held = f"blocks h.0 to h.{n_blocks - 1}" if n_blocks else "no block (no tensor h.N)"
        raise ValueError(f"{path / 'config.json'} has n_layer={config.n_layer}, but the weights in {path} hold {held}")
    # Each embedding under the names a file may give it: the tied head's stands for wte in a file
    # saved by safetensors' save_model (`read_weights`).
    embeddings = ((("transformer.wte.weight", "wte.weight", "lm_head.weight"), "(vocab_size, n_embd)",
                   (config.vocab_size, config.n_embd)),
                  (("transformer.wpe.weight", "wpe.weight"), "(n_positions, n_embd)", (config.n_positions, config.n_embd)))
    for names, fields, expected in embeddings:
        name = next((n for n in names if n in shapes), None)
        if name is not None and shapes[name] != expected:
            raise ValueError(f"tensor {name!r} in {path} has shape {shapes[name]}, but its config.json expects "
                             f"{expected} {fields}")


# The dtypes a CLI offers for the weights and math, by name (`--dtype`): its choices are the keys.
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The dtypes torch computes GPT-2's layers in, by name: what `from_pretrained(dtype=...)` takes, the
# CLI's and float64. float8 and float4 are floating point too, but storage formats only: torch has
# no add or matmul for them ('"add_stub" not implemented for Float8_e4m3fn').
COMPUTE_DTYPE_NAMES = {**DTYPE_NAMES, "float64": torch.float64}
COMPUTE_DTYPES = tuple(COMPUTE_DTYPE_NAMES.values())


def interrupted_save(path: Path) -> str:
    """What to do about a checkpoint directory with weights but no config.json: finish the save
    that was killed between removing the old config and renaming the new one in, when its files
    say so, else save again.

    `write_checkpoint` writes the weights' temp, then the config's (whole: save_json writes it
    atomically too), and renames the weights in first. So config.json.tmp belongs to the weights
    when it is at least as new as they are: model.safetensors.tmp if that is there still (killed
    before either rename), else model.safetensors. A later save killed while writing its weights
    leaves a model.safetensors.tmp newer than the config: no pair, then."""
    config_tmp, weights_tmp, weights = temp_path(path / "config.json"), temp_path(path / WEIGHTS_NAME), path / WEIGHTS_NAME
    new_weights = weights_tmp if weights_tmp.is_file() else weights
    if not (config_tmp.is_file() and new_weights.is_file()
            and config_tmp.stat().st_mtime_ns >= new_weights.stat().st_mtime_ns):
        return "a save that was interrupted before its last step (save the model again), or a copy without it"
    renames = [(config_tmp, path / "config.json")]
    if new_weights == weights_tmp:  # the weights' rename first, as `write_checkpoint` makes them
        renames.insert(0, (weights_tmp, weights))
    return (f"a save was killed before its last step, after writing the new files in full; {config_tmp.name} is the "
            f"config of {new_weights.name}: rename to finish that save ({rename_command(renames)})")


def rename_command(renames: list[tuple[Path, Path]]) -> str:
    """The shell command that makes each (source, target) rename in turn, its paths quoted (a
    folder name may hold a space); on Windows, which has no `mv`, the renames said in words."""
    if os.name == "nt":
        return "; then ".join(f'rename "{source}" to "{target}"' for source, target in renames)
    return " && ".join(f"mv {shlex.quote(str(source))} {shlex.quote(str(target))}" for source, target in renames)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """`from_pretrained`'s dtype: None (the file's own), one of COMPUTE_DTYPES, or its name as CLIs
    pass it ("bfloat16") or str() writes it ("torch.bfloat16"). A name is looked up in a table
    (COMPUTE_DTYPE_NAMES), not taken as any attribute of torch: dtype="e" was torch.e, refused as
    "got 2.718281828459045"."""
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name not in COMPUTE_DTYPE_NAMES:
            auto = ("; dtype=None keeps the weights' stored dtype (transformers' \"auto\" takes config.json's "
                    "dtype where it names one)") if name == "auto" else ""
            raise ValueError(f"dtype must be one of {', '.join(COMPUTE_DTYPE_NAMES)} (or a torch.dtype, or None: the "
                             f"file's), got {dtype!r}{auto}")
        dtype = COMPUTE_DTYPE_NAMES[name]
    if dtype is not None and dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, COMPUTE_DTYPES))} (the dtypes torch computes "
                         f"a model in), got {dtype!r}")
    return dtype


def resolve_device(device: torch.device | str | None) -> torch.device | None:
    """The device, checked to be there: CUDA asked of a CPU-only machine (or torch build) is an
    error that says so, instead of an assertion from deep inside torch at the first copy. "auto"
    is the GPU when there is one, else the CPU (the --device default of the commands that run a
    model: generate, eval, train, finetune)."""
    if device is None:
        return None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{device!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available (torch {torch.__version__}; no GPU, no driver, "
                         "or a CPU-only build of torch)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps: Apple's Metal backend is not available here")
    return device


# The names a PyTorch pickle goes by: nanoGPT's out_dir/ckpt.pt, torch.save's .pt/.pth, Lightning's .ckpt,
# Hugging Face's older pytorch_model.bin. Passed as a checkpoint, the likeliest is nanoGPT's.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NANOGPT_CKPT = "ckpt.pt"  # what nanoGPT's train.py saves in its out_dir


def is_pickle(path: Path) -> bool:
    """Whether the file `path` is a PyTorch pickle by its first bytes, whatever its name: torch.save
    writes a zip archive (b"PK"), older torch and pickle.dump a protocol-2+ pickle (b"\\x80"). A .bin
    may be a token file (minigpt prepare's, nanoGPT's), which is neither."""
    with open(path, "rb") as f:
        return f.read(2).startswith((b"PK", b"\x80"))


# The converter: a script of minigpt's checkout (an installed wheel has no scripts/).
CONVERTER = Path(__file__).resolve().parent.parent / "scripts" / "convert_nanogpt.py"


def convert_command(ckpt: Path) -> str:
    """The command that converts nanoGPT's ckpt.pt (or its out_dir) into a checkpoint directory,
    runnable from any folder: the script by its full path, where this minigpt has it."""
    script = shlex.quote(str(CONVERTER)) if CONVERTER.is_file() else "scripts/convert_nanogpt.py (in minigpt's checkout)"
    return f"python {script} {shlex.quote(str(ckpt))} NEW_DIR"


def download_hint(path: Path) -> str:
    """What to run: in a folder where a download stopped (its files wait there as FILE.partial until
    all four are whole, minigpt/download.py), the download again; else, when its name is one of the
    four GPT-2 sizes, how to fetch OpenAI's weights into it, or, when it could be another Hub
    model's name, how to fetch that (`hub_hint`). A folder with nanoGPT's ckpt.pt (its out_dir): how to convert it."""
    if (path / NANOGPT_CKPT).is_file():
        return f" (it holds nanoGPT's {NANOGPT_CKPT}; convert it: {convert_command(path)})"
    if path.is_dir() and any(path.glob("*.partial")):
        return " (it holds the .partial files of a download that stopped: run the same minigpt download again to finish it)"
    if path.name not in GPT2_SIZES:
        return hub_hint(path)
    if path.resolve().is_relative_to(CHECKPOINTS.resolve()) and CHECKPOINTS != DOWNLOADS:  # an installed package's own
        return f" (to fetch OpenAI's weights: minigpt download {path.name}, then --model {path.name})"
    # `minigpt download NAME` alone writes DOWNLOADS/NAME (checkpoints/NAME in a checkout), which need not be `path`.
    return f" (to fetch OpenAI's weights: minigpt download {path.name} --out {path})"


def pickle_hint(path: Path) -> str:
    """For a file that is a PyTorch pickle by its name and first bytes: how to convert it, were it
    nanoGPT's; else nothing."""
    if path.suffix in PICKLE_SUFFIXES and is_pickle(path):
        return f"; if it is nanoGPT's, convert it: {convert_command(path)}"
    return ""


def check_checkpoint_dir(path: Path) -> None:
    """A checkpoint is a directory: say so for a file inside one (its config.json, say), or for a
    PyTorch pickle (nanoGPT's ckpt.pt: how to convert it), and name the path that does not exist."""
    if path.is_file():
        if (path.parent / "config.json").is_file():  # e.g. its config.json, or model.safetensors
            raise NotADirectoryError(f"{path} is a file; a checkpoint is the directory that holds config.json and "
                                     f"model.safetensors ({path.parent}?)")
        if hint := pickle_hint(path):
            raise NotADirectoryError(f"{path} is a PyTorch pickle, not a checkpoint directory (config.json + "
                                     f"model.safetensors){hint}")
        raise NotADirectoryError(f"{path} is a file, not a checkpoint directory (config.json + model.safetensors)")
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist{download_hint(path)}")


def is_classifier_checkpoint(path: str | os.PathLike) -> bool:
    """Whether the checkpoint in `path` is a classifier (its config.json's architectures say
    GPT2ForSequenceClassification): train and eval refuse it in their own words, and the classifier
    loader and export pick their class by it. (`load_gpt` reads the architectures itself.)"""
    config = Path(path) / "config.json"
    d = read_json(config) if config.is_file() else {}
    return isinstance(d, dict) and "GPT2ForSequenceClassification" in architectures_of(d, str(config))


def load_gpt(path: str | os.PathLike, dtype: torch.dtype | str | None = None, device: torch.device | str | None = None,
             model_class: type[GPT] = GPT) -> GPT:
    """Load a Hugging Face GPT-2 directory, or one of OpenAI's four by name ("gpt2", ...,
    "gpt2-xl": `find_gpt2`), or a folder of LoRA adapters alone (its base with them merged in:
    minigpt/lora.py's `load_adapted`). `dtype=None` keeps the dtype stored in the file;
    `device="auto"` is the GPU when there is one. `model_class` is the class built (a subclass of
    GPT: `MyGPT.from_pretrained` passes its own)."""
    # What transformers keeps as `model.name_or_path`: the path or name as given. PEFT records it as
    # base_model_name_or_path in the adapters it saves from this model (else null: they name no base).
    name_or_path = os.fspath(path)
    path = find_gpt2(name) if (name := gpt2_name(path)) else Path(shipped_path(path))
    check_checkpoint_dir(path)
    if not (path / "config.json").exists() and (path / ADAPTER_CONFIG).is_file():  # LoRA adapters alone: their base, adapted
        model = load_adapted(path, dtype=dtype, device=device, model_class=model_class)
        model.name_or_path = name_or_path  # the adapters' folder, which loads as this merged model
        return model
    if not (path / "config.json").exists():  # e.g. checkpoints/gpt2, which ships only the tokenizer
        if (path / WEIGHTS_NAME).exists() or (path / INDEX_NAME).exists():  # what a save_gpt killed mid-rename leaves
            raise FileNotFoundError(f"{path} holds weights but no config.json: {interrupted_save(path)}")
        raise FileNotFoundError(f"no config.json in {path}: not a model checkpoint{download_hint(path)}")
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    config = GPTConfig.from_json(path / "config.json")
    architectures = architectures_of(read_json(path / "config.json"))  # (a JSON object: from_json said so)
    if "GPT2ForSequenceClassification" in architectures:  # its head has a loader of its own, which keeps it
        raise ValueError(f"{path} is a classifier (GPT2ForSequenceClassification), not a language model (GPT2LMHeadModel); "
                         "load it with minigpt.classifier.GPTClassifier.from_pretrained")
    head = next((TASK_HEADS[a] for a in architectures if a in TASK_HEADS), None)
    # config.json against the files' headers first: building a model of the wrong n_layer is slow.
    check_config_fits_weights(path, config, stored_shapes(weight_files(path)))
    # Build the model on the "meta" device: shapes only, no memory and no random init. The real
    # tensors are then *assigned* from the file, so at no point do two full copies of the weights
    # exist. safetensors even hands out tensors backed by the memory-mapped file: weights used
    # as stored (Conv1D ones as transposed views) stay file pages; only converted ones become new memory.
    try:
        with torch.device("meta"):
            model = model_class(config)
            layout = (model if model_class is GPT else GPT(config)).state_dict()  # GPT-2's tensors, not a subclass's own
    except RuntimeError as e:  # "Storage size calculation overflowed": a size no tensor can have
        raise ValueError(f"{path / 'config.json'} gives the model tensors too large for torch: {e}") from None
    expected = {k: p.shape for k, p in layout.items() if k != "lm_head.weight"}
    state, left_out = read_weights(path, expected, architectures, head, dtype, device)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"checkpoint {path} is missing {len(missing)} tensor(s): {first_few(missing, quoted=True)}")
    state = one_dtype(state, "transformer.wte.weight", path)

    if left_out:
        warnings.warn(f"{path} is a {', '.join(architectures)}: its task head ({', '.join(left_out)}) is not part of "
                      "the language model, and is left out", stacklevel=2)
    model.load_state_dict(state, strict=False, assign=True)  # lm_head is the tied wte, not in `state` (tied again: GPT.tie_weights)
    # A subclass's own tensors (a buffer its __init__ computes) are not in GPT-2's file: built on
    # the meta device, they hold no values, and the first forward would fail far from here. (Unless
    # the meta device was asked for: a model of shapes only, as GPTClassifier.from_pretrained gives.)
    unloaded = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unloaded and (device is None or device.type != "meta"):
        raise ValueError(f"{model_class.__name__} holds {first_few(unloaded, quoted=True)}, which GPT-2's checkpoint "
                         f"does not: built on the meta device to load it, they have no values; build it yourself "
                         f"and load a GPT's state into it: gpt = GPT.from_pretrained(path); model = {model_class.__name__}(gpt.config); "
                         f"model.load_state_dict(gpt.state_dict(), strict=False)")
    model.name_or_path = name_or_path
    return model.eval()


def read_weights(path: Path, expected: dict[str, torch.Size], architectures: list[str], head: str | None,
                 dtype: torch.dtype | None, device: torch.device,
                 ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint's tensors under minigpt's names (`expected`: name → shape), Conv1D weights
    transposed, each checked: the state, and the task head's tensors left out (`head`: their
    prefix). An explicit copy of the tied lm_head.weight is checked against wte as the file holds
    them (a `device="meta"` load holds no values to compare), and not kept."""
    state: dict[str, torch.Tensor] = {}
    stored_wte: list[torch.Tensor] = []  # wte as the file holds it, before as_held moves or casts it

    def take(name: str, key: str, t: torch.Tensor) -> None:
        if key.endswith(CONV1D_SUFFIXES):
            t = t.t()  # Conv1D (in, out) → Linear (out, in)
        if t.shape != expected[key]:
            raise wrong_shape(name, path, t.shape, expected[key])
        if not t.is_floating_point():
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}; GPT-2's weights are floating point")
        if key == "transformer.wte.weight":
            stored_wte.append(t)
        state[key] = as_held(t, dtype, device, f"tensor {name!r} in {path}")

    lm_head, left_out = None, []
    for name, t in read_tensors(weight_files(path)):
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if head and name.startswith(head):
            left_out.append(name)
            continue
        if name == "lm_head.weight":  # an explicit copy of the head; GPT-2 ties it to wte
            lm_head = t
            continue
        # GPT2LMHeadModel files say "transformer.h.0...", OpenAI's GPT2Model files just "h.0...".
        key = name if name.startswith("transformer.") else "transformer." + name
        if key not in expected:
            made_by = f" (config.json's architectures: {', '.join(architectures)})" if architectures else ""
            raise ValueError(f"unexpected tensor {name!r} in {path}: GPT-2 has no such weight{made_by}")
        if key in state:
            raise ValueError(f"tensor {key!r} appears twice in {path} (with and without the 'transformer.' prefix?)")
        take(name, key, t)
    if "transformer.wte.weight" not in state and lm_head is not None:
        # safetensors' save_model keeps one name of a tied pair, which may be the head's: it is wte.
        take("lm_head.weight", "transformer.wte.weight", lm_head)
    elif lm_head is not None and stored_wte and not same_matrix(lm_head, stored_wte[0]):
        raise ValueError(f"{path} has an lm_head.weight that differs from wte.weight; GPT-2 ties them, so minigpt cannot load it")
    return state, left_out


def wrong_shape(name: str, path: Path, shape: torch.Size, expected: torch.Size) -> ValueError:
    """The error for tensor `name` of the checkpoint `path`, whose config.json gives another shape
    (a Conv1D weight's shape as minigpt holds it: transposed)."""
    after = " (after transposing it: a Conv1D weight)" if name.endswith(CONV1D_SUFFIXES) else ""
    return ValueError(f"tensor {name!r} in {path} has shape {tuple(shape)}{after}, but its config.json expects "
                      f"{tuple(expected)}")


def as_held(t: torch.Tensor, dtype: torch.dtype | None, device: torch.device | None, name: str = "a weight") -> torch.Tensor:
    """A tensor read from a checkpoint (a Conv1D weight already transposed) as the model will hold
    it. With nothing to convert, used where it lies, in the memory-mapped file, a Conv1D weight as
    its transposed view: no copy (F.linear and oneDNN's packing read either layout, and training
    gives each weight contiguous memory of its own first: minigpt/train.py's prepare_model). Else
    one copy, contiguous: converted alone, a transposed view would keep its strides, and a second
    copy to make it contiguous left gpt2-xl's bf16 load 0.9 GB of freed heap. A cast that turns a
    finite weight into inf is refused, naming it (`name`, as the file does: `check_cast_fits`)."""
    if t.dtype == (dtype or t.dtype) and t.device == (device or t.device):
        return t
    # float16 alone of the compute dtypes has a range a weight may pass (5 exponent bits: 65504), so a
    # cast to it is checked; bfloat16 has float32's 8 bits, and skips the check's pass over the weights.
    if dtype == torch.float16:
        check_cast_fits(name, t, dtype, "loaded as float16 it would be inf; load it as bfloat16 (float32's range "
                                        "in 16 bits: dtype=torch.bfloat16, --dtype bfloat16) or float32")
    return t.to(device=device, dtype=dtype or t.dtype, memory_format=torch.contiguous_format)


def check_cast_fits(name: str, t: torch.Tensor, dtype: torch.dtype, remedy: str) -> None:
    """Refuse (ValueError naming the tensor, then `remedy`: what the cast would do, and what to do
    instead) a weight `t` that a cast to `dtype` would turn into inf: float16 tops out at 65504, and
    a weight of 1e5 loaded (or exported) as inf without a word, and the model gave NaN logits. A
    weight that is not finite to begin with is left to the caller: the file's, not the cast's."""
    if torch.finfo(dtype).max >= torch.finfo(t.dtype).max or t.numel() == 0:  # as wide (or no values): it fits
        return
    # Rounding keeps order, so the cast overflows somewhere iff it overflows the largest |value|. Found
    # on t, with one pass of min and max, rather than isfinite() on the cast half tensor: half-precision
    # elementwise work is slow on a CPU (a review timed that way as the slower one, noisy 2-core runs).
    if t.dim() == 2 and t.mT.is_contiguous():  # a Conv1D weight's transposed view: the same values, read in order (faster)
        t = t.mT
    low, high = torch.aminmax(t)
    largest = torch.maximum(-low, high)  # NaN if t holds one: not finite, left alone as below
    if not (largest.isfinite() and largest.to(dtype).isinf()):
        return
    as_name = str(dtype).removeprefix("torch.")
    raise ValueError(f"{name} holds {largest.item():g} (its largest |value|), past {as_name}'s largest finite "
                     f"value {torch.finfo(dtype).max:g}: {remedy}")


def one_dtype(state: dict[str, torch.Tensor], bulk: str, path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """dtype=None keeps the file's dtype, but a file may mix them (a float32 LayerNorm or head among
    float16 weights); the model computes in one, so the odd ones out take that of `bulk` (the
    token embeddings, whose dtype stands for the bulk of the weights), a float16 one checked as a
    float16 load checks its weights (`as_held`). `prefix`: what `state`'s keys put before the
    file's names (a model holding its GPT as a submodule), left out of the names an error gives."""
    dtype = state[bulk].dtype
    if dtype not in COMPUTE_DTYPES:  # a float8 file: read, it loads, and fails at the first forward
        raise ValueError(f"tensor {bulk!r} has dtype {dtype}, a storage format torch cannot compute in (the others "
                         f"would take it too); load the weights cast to one it can, with dtype=torch.bfloat16 "
                         f"(--dtype bfloat16), or float16 or float32")
    return {key: as_held(t, dtype, None, f"tensor {key.removeprefix(prefix)!r} in {path}") for key, t in state.items()}


def check_gpt2_tensors(model: GPT) -> None:
    """Refuse to save a model whose tensors are not GPT-2's layout for its config: a tensor whose
    shape its config does not give (a vocabulary grown by hand), blocks its config does not count
    (`GPT.check_config`), tensors the layout has no name for (unmerged LoRA adapters) or tensors it
    needs that the model lacks (nanoGPT's bias=False): neither minigpt nor transformers could load
    the checkpoint back as the model it was."""
    with torch.device("meta"):  # GPT-2's own tensor names and shapes, from a model of shapes only
        layout = GPT(model.config).state_dict()
    check_layout(model, model.state_dict(), layout, "lm_head.weight")


def check_layout(gpt: GPT, state: dict[str, torch.Tensor], layout: dict[str, torch.Tensor], head: str) -> None:
    """`check_gpt2_tensors`' checks of a model's `state` against the `layout` of its config, for a
    language model and for a classifier (GPTClassifier.save_pretrained), whose GPT is `gpt`; `head`
    names the tied lm_head, which is wte again."""
    refuse_resized_tensors({k: t for k, t in state.items() if k != head}, layout)
    # After the resize check (its error names the field for a resized wpe too), before the two
    # below, which would name an appended block's tensors as extra rather than n_layer as stale.
    gpt.check_config()
    refuse_extra_tensors(state.keys() - layout.keys())
    refuse_missing_tensors(layout.keys() - state.keys())


def check_tied_head(model: GPT) -> None:
    """GPT-2's layout stores wte once and ties lm_head to it: refuse a head that was untied (a new
    Parameter assigned to it) and then changed, which the saved checkpoint would silently lose."""
    head, wte = model.lm_head.weight, model.transformer.wte.weight
    if not same_matrix(head.detach(), wte.detach()):
        raise ValueError("the model's lm_head.weight is no longer tied to transformer.wte.weight and differs from it; "
                         "GPT-2's checkpoint layout stores one matrix for both, so the head would be lost; tie them "
                         "again before saving: model.tie_weights()")


def refuse_extra_tensors(names: set[str]) -> None:
    """`check_gpt2_tensors`' error, for tensors that a checkpoint layout has no place for."""
    extra = sorted(names)
    if extra:
        hint = " (LoRA adapters: merge them first with minigpt.lora.merge_lora)" if any("lora_" in k for k in extra) else ""
        raise ValueError(f"the model holds tensors that GPT-2's checkpoint layout has no place for: "
                         f"{first_few(extra, quoted=True)}{hint}")


def refuse_missing_tensors(names: set[str]) -> None:
    """`check_gpt2_tensors`' error, for tensors of GPT-2's layout that the model does not hold:
    saved without them, the checkpoint was one that `load_gpt` refuses ("missing N tensor(s)")."""
    missing = sorted(names)
    if not missing:
        return
    hint = ("; GPT-2 has a bias in every Linear of its blocks and every LayerNorm, and a zero bias computes what none does: give each "
            "bias-free layer zeros before saving (layer.bias = nn.Parameter(torch.zeros(n))), as "
            "scripts/convert_nanogpt.py does for nanoGPT's bias=False") if all(k.endswith(".bias") for k in missing) else ""
    raise ValueError(f"the model lacks {len(missing)} tensor(s) that GPT-2's checkpoint layout holds, so the "
                     f"checkpoint would not load back: {first_few(missing, quoted=True)}{hint}")


# The config field that gives each dimension of a tensor, by the end of its name, where it is that
# field itself; any other dimension comes from n_embd (c_attn's first is 3 × n_embd).
SHAPE_FIELDS = {"wte.weight": ("vocab_size", None), "wpe.weight": ("n_positions", None),
                "mlp.c_fc.weight": ("n_inner", None), "mlp.c_fc.bias": ("n_inner",), "mlp.c_proj.weight": (None, "n_inner")}


def refuse_resized_tensors(state: dict[str, torch.Tensor], layout: dict[str, torch.Tensor]) -> None:
    """Refuse tensors whose shape differs from the one the model's config gives them (`layout`: the
    state of a model of shapes only, built from that config), naming the config field to update.
    config.json is written from the config, so a tensor resized by hand (wte grown for new tokens)
    would be saved beside a config that says otherwise."""
    resized = [name for name, t in state.items() if name in layout and t.shape != layout[name].shape]
    if not resized:
        return
    name, shape, expected = resized[0], tuple(state[resized[0]].shape), tuple(layout[resized[0]].shape)
    fields = next((f for suffix, f in SHAPE_FIELDS.items() if name.endswith(suffix)), (None,) * len(shape))
    in_body = "transformer." in name  # else a head's (a classifier's score): not sized by GPTConfig's fields
    fixes = {f"config.{field} = {size}" if field else "config.n_embd (the width of every tensor)"
             for field, size, want in zip(fields, shape, expected) if size != want and (field or in_body)}
    others = first_few(resized[1:], quoted=True)
    more = f" ({len(resized) - 1} more tensor(s) differ too: {others})" if len(resized) > 1 else ""
    raise ValueError(f"tensor {name!r} has shape {shape}, but the model's config gives it {expected}{more}; config.json is "
                     f"written from the config, so the checkpoint would load nowhere: set the model's config to the new "
                     f"size before saving: {'; '.join(sorted(fixes)) or 'the field that gives its size'}")


def save_gpt(model: GPT, path: str | os.PathLike) -> None:
    """Write config.json + model.safetensors so `transformers` can open the directory (`write_checkpoint`)."""
    check_gpt2_tensors(model)
    check_tied_head(model)
    tensors = {}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to wte; HF re-ties it on load
        if key.endswith(CONV1D_SUFFIXES):
            t = t.t()  # Linear (out, in) → Conv1D (in, out); a view, copied only while written
        tensors[key] = t
    dtype = str(model.transformer.wte.weight.dtype).removeprefix("torch.")
    write_checkpoint(path, tensors, lambda config: model.config.save_json(config, architecture="GPT2LMHeadModel",
                                                                          extra={"torch_dtype": dtype}))


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], write_config: Callable[[Path], None]) -> None:
    """Write `tensors` as model.safetensors and, by `write_config(file)`, config.json, into `path`.

    Both files are written in full under temp names, and made durable (fsync), before either is
    renamed into place, and an old config.json that differs goes just before the renames (weights
    first, then the config). So a save that fails or is killed at any point leaves the previous
    checkpoint, the new one, or weights without a config.json, which `load_gpt` refuses, saying
    why; never new weights beside another model's config, which would load without an error if the
    shapes agree (n_head, layer_norm_epsilon). An old config.json that is the same (every checkpoint of a run) stays.
    A generation_config.json (transformers writes one) goes too: its token ids are the old model's.

    One save into a directory at a time: a second (every rank of a DDP script calling save_pretrained)
    waits for the first's lock, then writes its own in full. The last to save wins, whole; without
    the lock the two would share atomic_path's temp names and could leave one's weights under the
    other's config, or weights with no config at all.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = path / "config.json"
    with save_lock(path):
        # On leaving, the inner atomic_path renames the weights in, then the outer one the config.
        with atomic_path(config) as config_tmp, atomic_path(path / WEIGHTS_NAME) as weights_tmp:
            # The new file atomic_path made, and no link put in its place since (which "wb" would follow).
            with open(weights_tmp, "wb", opener=no_follow) as f:
                stream_safetensors(tensors, f)
            write_config(config_tmp)
            # Durable before any old file goes: the fsync is the slow part (seconds for GPT-2's GBs), and
            # a failure or Ctrl-C in it must leave the previous checkpoint whole (atomic_path's own
            # fsync, on leaving, then has nothing left to write).
            fsync_file(weights_tmp)
            fsync_file(config_tmp)
            # The same config: kept, so a kill between the renames leaves a checkpoint that loads.
            if not (config.is_file() and config.read_bytes() == config_tmp.read_bytes()):
                config.unlink(missing_ok=True)
            (path / GENERATION_CONFIG_NAME).unlink(missing_ok=True)
        _remove_stale_shards(path)


def _remove_stale_shards(path: Path) -> None:
    """After a single-file save into a directory that held a sharded checkpoint, drop the old shards."""
    index = path / INDEX_NAME
    if not index.exists():
        return
    try:
        shards = set(read_json(index)["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):  # ValueError: not UTF-8, or not JSON
        shards = set()  # unreadable index: remove only the index itself
    index.unlink()
    for s in shards:
        # A plain file name in this directory: never a path, a folder ("" is this one) or a number.
        if isinstance(s, str) and Path(s).name == s and s != WEIGHTS_NAME and not (path / s).is_dir():
            (path / s).unlink(missing_ok=True)


# safetensors' names for the dtypes a checkpoint can hold.
SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def stream_safetensors(tensors: dict[str, torch.Tensor], f: BinaryIO) -> None:
    """Write `tensors` to the open file `f` in the safetensors format, one tensor at a time.

    The format is simple enough to write by hand: an 8-byte little-endian header length, a JSON
    header giving each tensor's dtype, shape and byte range, then the raw bytes back to back.
    Streaming it tensor by tensor means a save never needs a second, CPU-side copy of the model
    (safetensors' own `save_file` wants every tensor contiguous on the CPU at once).
    """
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}  # older transformers refuse a file without it
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"cannot save tensor {name!r} of dtype {t.dtype} as safetensors")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # pad with spaces so the tensor bytes start 8-byte aligned
    f.write(len(blob).to_bytes(8, "little"))
    f.write(blob)
    for t in tensors.values():
        # One tensor at a time: to CPU, row-major, raw bytes (torch is little-endian, as the format).
        f.write(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
