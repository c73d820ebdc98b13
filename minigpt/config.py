"""GPTConfig: the handful of numbers that fix a GPT-2's shape.

Where it sits: `GPTConfig` → `GPT(config)`. It reads and writes Hugging Face's `config.json`, so
a checkpoint saved by minigpt opens in `transformers` and the other way round.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from minigpt.checks import as_count, caller_stacklevel, check_rate
from minigpt.files import atomic_write_text, read_json

# OpenAI's four released sizes. Every one shares the vocabulary (50257 byte-level BPE tokens)
# and the 1024-token context; only depth and width grow.
PRESETS: dict[str, dict] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # Small shapes for tests and CPU experiments (same vocabulary unless overridden).
    "gpt2-tiny": dict(n_layer=2, n_head=4, n_embd=64, n_positions=128),
    "gpt2-mini": dict(n_layer=4, n_head=4, n_embd=256, n_positions=256),
}

# The names OpenAI's four sizes go by (on the Hub: openai-community/NAME); one tokenizer serves all.
GPT2_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# The shipped checkpoints (checkpoints/shakespeare, and GPT-2's tokenizer in checkpoints/gpt2): the
# repository's checkpoints/ in a checkout (pip install -e .), or the copy that a wheel (pip install .)
# puts inside the package, as pyproject.toml's package-dir says.
_PACKAGED = Path(__file__).resolve().parent / "checkpoints"
CHECKPOINTS = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parent.parent / "checkpoints"


def user_cache_source(below: str = "") -> tuple[Path, str]:
    """The user's cache directory, or its folder `below` ("minigpt": config.DOWNLOADS), and where it
    comes from, as an error tells the user what to change ("$XDG_CACHE_HOME/minigpt", or "$HOME/.cache/minigpt,
    HOME being /home/ada"). As the XDG spec has it: $XDG_CACHE_HOME if it is an absolute path (a
    "~" or $VAR in it expanded: a Dockerfile's ENV leaves them as typed; a relative one is ignored,
    or downloads would land wherever a command ran), else ~/.cache (the home being $HOME, or the
    user's /etc/passwd entry); with no home directory at all (a container run as a user /etc/passwd
    lacks), `temp_cache()`."""
    def under(root: str) -> str:
        return f"{root}/{below}" if below else root

    xdg = os.path.expandvars(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "")))
    if os.path.isabs(xdg):
        return Path(xdg, below), under("$XDG_CACHE_HOME")
    try:
        home = Path.home()
    except RuntimeError:  # "Could not determine home directory": no $HOME, no passwd entry
        return temp_cache() / below, under("the temp directory's cache-UID") + ", there being no home directory"
    if "HOME" in os.environ:
        return home / ".cache" / below, under("$HOME/.cache") + f", HOME being {os.environ['HOME']}"
    return home / ".cache" / below, under("your home's .cache")


def temp_cache() -> Path:
    """The cache folder when there is no home directory: one per user, in the temp directory. The
    temp directory is shared and the name predictable, so it is checked before use (`check_temp_cache`)."""
    return Path(tempfile.gettempdir()) / f"cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def check_temp_cache(path: Path) -> None:
    """Before a download reads or writes `path`: if it lies in `temp_cache()`, make that folder
    private (mode 0o700) where it is missing, and refuse it unless it is this user's alone. Another
    user could make it first and put a "GPT-2" in it for --model gpt2 to load, or read what is
    downloaded there. Checked where it is used, not at import: `import minigpt` creates nothing.
    (Windows has no uids to check: its temp directory is the user's own, under %LOCALAPPDATA%.)"""
    cache = temp_cache()
    if not hasattr(os, "getuid") or not path.is_relative_to(cache):
        return
    try:
        cache.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = cache.lstat()  # the link's own owner and mode, where it is a link (refused: not a directory)
    problem = ("is not a directory" if cache.is_symlink() or not cache.is_dir()
               else f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})" if st.st_uid != os.getuid()
               else f"is writable by other users (mode {st.st_mode & 0o777:#o})" if st.st_mode & 0o022
               else None)
    if problem:
        raise PermissionError(f"{cache}, the cache folder used when there is no home directory, {problem}, so what "
                              "is in it cannot be trusted: set XDG_CACHE_HOME (or HOME) to a folder of your own")


# Where `minigpt download NAME` puts GPT-2's weights, and --model NAME looks first: checkpoints/ in a
# checkout; a user cache for an installed package, since site-packages may be read-only and a
# reinstall would delete what it holds (6 GB for gpt2-xl). Found once, at import, with where it came
# from (an error about the folder says what to change): both from the same environment.
DOWNLOADS, DOWNLOADS_SOURCE = (user_cache_source("minigpt") if _PACKAGED.is_dir()
                               else (CHECKPOINTS, "the checkout's checkpoints folder"))
# A checkpoint's weights, as transformers names them: one file, or shards listed in an index.
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"  # transformers' older format: named in an error, not read
# What a training run keeps beside its checkpoint (minigpt/run_dir.py, minigpt/run_log.py): named
# here, where no torch is imported, so that `minigpt download` can tell a run's folder at once.
STATE_FILE = "training_state.pt"
LOG_FILE = "log.jsonl"


def gpt2_name(path: str | os.PathLike) -> str | None:
    """The GPT-2 size that `path` names ("gpt2-xl", or the Hub's "openai-community/gpt2-xl") when no
    such file or directory exists here; else None. What a name then loads: download.find_gpt2."""
    name = str(path).removeprefix("openai-community/")
    return name if name in GPT2_SIZES and not Path(path).exists() else None


def shipped_path(path: str | os.PathLike, hub: bool = True) -> str | os.PathLike:
    """`path`, or where the checkpoint it names lies when no such path exists here: the shipped
    checkpoint it names as README does ("checkpoints/shakespeare", "checkpoints/gpt2"; an installed
    minigpt, run outside the repository, keeps its checkpoints/ inside the package: `CHECKPOINTS`),
    else (with `hub`: a path that names a model or tokenizer, not data) the Hugging Face cache's
    copy of the Hub model it names ("sshleifer/tiny-gpt2", "distilgpt2"), as transformers finds it
    offline (download.find_hub_model: read, never fetched). A GPT-2 size stays a name:
    download.find_gpt2 looks in checkpoints/NAME first."""
    if Path(path).exists() or gpt2_name(path):
        return path
    parts = Path(path).parts
    if len(parts) > 1 and parts[0] == "checkpoints" and (inside := CHECKPOINTS.joinpath(*parts[1:])).exists():
        return inside
    if not hub:
        return path
    from minigpt.download import find_hub_model  # (here: minigpt.download imports this module)

    return find_hub_model(path) or path


def ids_file(config_path: Path) -> Path:
    """The file a model's token ids (bos, eos, pad) are read from: the generation_config.json beside
    `config_path` where there is one (transformers' `generate` takes them from that file alone, an
    id it lacks being none), else config.json itself."""
    generation = config_path.with_name("generation_config.json")
    return generation if generation.is_file() else config_path


# The token ids a config names (GPTConfig's fields of these names): in config.json, and in a
# generation_config.json beside it.
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")

# GPT-2's activation is the tanh approximation of GELU; HF calls it "gelu_new" (GPT2Config's default,
# and what OpenAI's checkpoints say), "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast" or
# "gelu_accurate" (the same formula; transformers' gelu_accurate and gelu_python_tanh compute
# bitwise what its gelu_new does). Plain "gelu" (exact
# erf) gives different logits, so it is refused.
_TANH_GELU_NAMES = ("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast", "gelu_accurate")
# GPT2Config's boolean options that minigpt reads: name -> (transformers' default, which an absent
# key means; the value minigpt's GPT-2 computes with, None for either; what the other value asks for).
_BOOL_OPTIONS: dict[str, tuple[bool, bool | None, str]] = {
    "scale_attn_weights": (True, True, "attention scores not divided by sqrt(head_dim)"),
    "scale_attn_by_inverse_layer_idx": (False, False, "each layer's scores also divided by its index + 1"),
    "add_cross_attention": (False, False, "cross-attention to an encoder's states"),
    "tie_word_embeddings": (True, True, "an lm_head of its own, where GPT-2 ties it to wte"),
    # Only rounding, in transformers' eager attention: minigpt loads either (see to_hf_dict).
    "reorder_and_upcast_attn": (False, None, ""),
}


def _check_bool_options(d: dict, source: str, is_classifier: bool) -> None:
    """Refuse a boolean option of config.json (`_BOOL_OPTIONS`) that is not a JSON true or false,
    or asks for what minigpt's GPT-2 does not compute, naming the file's value as the file has it.
    transformers 5 refuses 0, null and "false" there too; an older one read them as Python does
    (0 as false, "false" as true), so such a file means different models to different readers."""
    for name, (default, needed, other) in _BOOL_OPTIONS.items():
        value = d.get(name, default)
        # Only a language model has an lm_head to tie; transformers' classifier has none, so there
        # the flag says nothing about the weights (and load_gpt refuses a classifier by its name).
        if name == "tie_word_embeddings" and is_classifier:
            needed = None
        if not isinstance(value, bool):
            problem = "which is no JSON bool: write true or false"
        elif needed is not None and value != needed:
            problem = f"asking for {other}, which minigpt's GPT-2 does not implement"
        else:
            continue
        raise ValueError(f"{source} sets {name}={json.dumps(value, default=repr)}, {problem}")


# The generic names transformers' GPT2Config also accepts for its own (its attribute_map).
_HF_ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
               "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}


def architectures_of(d: dict, source: str = "config.json") -> list[str]:
    """The model classes config.json's `architectures` names (["GPT2LMHeadModel"]: the class that
    saved it), [] when it names none. transformers writes a list of names but reads any value, so
    one name alone is taken as a list of one; a number or a list of anything but names is a
    ValueError naming `source`, not a TypeError from the first `in` test against it."""
    value = d.get("architectures") or []
    names = [value] if isinstance(value, str) else value
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise ValueError(f"{source}: architectures must be a list of model class names such as "
                         f'["GPT2LMHeadModel"], got {value!r}')
    return names


SomeConfig = TypeVar("SomeConfig", bound="GPTConfig")  # GPTConfig or a subclass: what its constructors build


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024  # the context length: how many positions `wpe` has
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd, as in GPT-2
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0  # one rate for embeddings, attention and residuals (HF keeps three)
    initializer_range: float = 0.02
    # Token ids. None: the model has no such token (config.json's null). bos is what an empty
    # prompt starts from; eos ends a text (one id, or a list); pad fills a finished row (None: eos).
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        # Sizes are counts: a float (2.5) or a bool would otherwise fail later, deep inside torch.
        # A NumPy number (from a sweep) is kept as the plain int or float it stands for, so that
        # config.json can be written (json cannot serialise np.int64).
        sizes = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"] + ["n_inner"] * (self.n_inner is not None)
        for name in sizes:
            value = as_count(name, getattr(self, name))
            if value <= 0:
                none_means = ", or None for 4 * n_embd;" if name == "n_inner" else ","
                raise ValueError(f"{name} must be positive{none_means} got {value}")
            setattr(self, name, value)
        # Token ids are ints or None; EOS may also be a list of them, as some HF configs hold. One
        # outside the vocabulary (GPT-2's 50256 kept by a smaller one, as older checkpoints hold, or
        # a negative one given here; config.json's is refused: `_check_file_token_ids`) loads as a
        # stale id (`has_stale_eos`), so only the type is checked: "a" or 5.0 would be taken for the
        # id that ends every text.
        for name in TOKEN_IDS:
            value = getattr(self, name)
            if value is None:
                continue
            ids = value if name == "eos_token_id" and isinstance(value, list) else [value]
            try:
                ids = [as_count(name, t) for t in ids]
            except TypeError:
                some = " or a list of them" if name == "eos_token_id" else ""
                raise TypeError(f"{name} must be an integer{some}, got {value!r}") from None
            setattr(self, name, ids if isinstance(value, list) else ids[0])
        # A list's first id (the first the model has) is the one a finished row is padded with
        # (`eos_ids`), so an empty list would fail only at the first generate; never stopping on EOS
        # is generate's eos_token_id=[].
        if self.eos_token_id == []:
            raise ValueError("eos_token_id must be an int or a non-empty list of ints, got []: to never stop on EOS, "
                             "pass eos_token_id=[] to generate instead")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        self.dropout = check_rate("dropout", self.dropout)  # a plain float: a NumPy rate would fail save_json's JSON
        # inf would make every LayerNorm output 0, and an infinite init std NaN weights.
        for name, ok, allowed in (("layer_norm_epsilon", lambda x: 0 < x < math.inf,
                                   "must be positive and finite (LayerNorm divides by sqrt(var + eps))"),
                                  ("initializer_range", lambda x: 0 <= x < math.inf, "(the init's std) must be >= 0 and finite")):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not ok(value):
                raise ValueError(f"{name} {allowed}, got {value!r}")
            setattr(self, name, float(value))

    @property
    def head_dim(self) -> int:
        """Each attention head's width: n_embd / n_head (64 in every GPT-2 size)."""
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width: n_inner, or 4 × n_embd when it is None (GPT-2's)."""
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    def to_dict(self) -> dict:
        """The fields as a dict, with GPT-2's `tie_word_embeddings=True`, which PEFT reads here (as
        transformers' `PretrainedConfig.to_dict`) to handle the tie (see GPT._tied_weights_keys); it
        is no field, since every GPT is built tied. A head you untie by hand is not seen here: PEFT
        may then warn of a tie that is gone (merging an adapter on lm_head), but it ties nothing,
        as GPT._tied_weights_keys then names no tie."""
        # (PEFT itself may set the attribute, False, when it merges an adapter on an untied lm_head.)
        return asdict(self) | {"tie_word_embeddings": vars(self).get("tie_word_embeddings", True)}

    @classmethod
    def from_pretrained(cls: type[SomeConfig], path: str | os.PathLike) -> SomeConfig:
        """The config of the checkpoint `path` names (a GPT-2 size by name: its preset), as
        transformers' `GPT2Config.from_pretrained`: PEFT calls it on the base it records when it
        saves adapters (GPT.name_or_path), to see whether the fine-tune resized the vocabulary."""
        name = gpt2_name(path)
        return cls.gpt2(name) if name else cls.from_json(shipped_path(path))

    @classmethod
    def gpt2(cls: type[SomeConfig], name: str = "gpt2", **overrides) -> SomeConfig:
        """A preset by name: `GPTConfig.gpt2("gpt2-medium")`, with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ---- Hugging Face config.json -------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls: type[SomeConfig], d: dict, source: str = "config.json",
                     ids_source: str | None = None) -> SomeConfig:
        """A config.json's dict (transformers' GPT2Config) as a GPTConfig; a GPT-2 variant minigpt
        does not implement (another activation, cross-attention, untied weights) is a ValueError.
        `source` names the file in errors and warnings (`from_json` gives its path), `ids_source`
        the file the token ids came from, where that is another (a generation_config.json)."""
        if not isinstance(d, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type != "gpt2":
            raise ValueError(f"{source} has model_type={model_type!r}; minigpt loads only 'gpt2' models")
        act = d.get("activation_function", "gelu_new")
        if act not in _TANH_GELU_NAMES:
            raise ValueError(f"{source} has activation_function={act!r}; GPT-2 uses one of {_TANH_GELU_NAMES}")
        is_classifier = "GPT2ForSequenceClassification" in architectures_of(d, source)
        _check_bool_options(d, source, is_classifier)
        d = dict(d)
        for alias, name in _HF_ALIASES.items():  # transformers' GPT2Config reads either name
            if alias in d:
                if name in d and d[name] != d[alias]:
                    raise ValueError(f"{source} sets {name}={d[name]!r} and its alias {alias}={d[alias]!r}, which disagree")
                d[name] = d.pop(alias)
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names and k != "dropout"}
        # One rate serves all three of HF's (GPT2Config's default for each: 0.1). Rates that differ
        # cannot be kept: say which one is used, rather than train with another model's dropout.
        rates = {k: d.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
        for name, rate in rates.items():  # float() would take "0.1" and True
            if not isinstance(rate, numbers.Real) or isinstance(rate, bool):
                raise ValueError(f"{source}: {name} must be a number (a dropout rate in [0, 1)), got {rate!r}")
        if len(set(rates.values())) > 1:
            warnings.warn(f"{source} sets {', '.join(f'{k}={v}' for k, v in rates.items())}; minigpt has one "
                          f"dropout rate and uses resid_pdrop={rates['resid_pdrop']} for all three (only training "
                          "sees it: set_dropout or --dropout to choose another)", stacklevel=caller_stacklevel())
        kwargs["dropout"] = float(rates["resid_pdrop"])
        try:  # a null token id is None: the model has no such token, as in transformers
            config = cls(**kwargs)
        except (TypeError, ValueError) as e:  # "n_layer must be an integer, got 1.0": the file's fault, said as such
            # (a token id's, that of the file it came from: generation_config.json, where there is one)
            raise ValueError(f"{ids_source if ids_source and str(e).startswith(TOKEN_IDS) else source}: {e}") from None
        config._check_file_token_ids(ids_source or source, is_classifier)
        return config

    def _check_file_token_ids(self, source: str, is_classifier: bool) -> None:
        """The token ids read from `source` (config.json, or generation_config.json beside it),
        checked against the vocabulary. A negative
        id is no token of any vocabulary: a damaged or forged file, refused (as a pad id, it would
        come out of generate and fail only at decode). An id past the vocabulary is one of a larger
        one, as a stale EOS is (GPT-2's 50256 kept by a smaller model, `has_stale_eos`): an EOS or
        BOS is kept and answered where it is used; a pad id is dropped with a warning, as for a
        model that names none (to_hf_dict writes it as null too). The warning says what that means
        where the pad is used: a language model pads finished rows with the EOS instead; a
        classifier (`is_classifier`: this is its pad too) has none, so ids alone are read whole."""
        for name in TOKEN_IDS:
            value = getattr(self, name)
            ids = value if isinstance(value, list) else [] if value is None else [value]
            if any(t < 0 for t in ids):
                raise ValueError(f"{source} sets {name} {value}: a token id is never negative (this model's "
                                 f"are 0 .. {self.vocab_size - 1}; null names none)")
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            meaning = ("ids alone are read to their last token, and a padded batch needs its attention_mask"
                       if is_classifier else "finished rows are padded with the EOS")
            warnings.warn(f"{source} sets pad_token_id {self.pad_token_id}, which is no token of this model (ids "
                          f"0 .. {self.vocab_size - 1}): ignored, so {meaning}",
                          stacklevel=caller_stacklevel())  # (the user's call that loads it)
            self.pad_token_id = None

    def to_hf_dict(self, architecture: str = "GPT2LMHeadModel") -> dict:
        """The dict config.json holds, as transformers' GPT2Config writes it (HF's three dropout rates
        set to this one), with `architecture` naming the head. A loaded file's reorder_and_upcast_attn
        is not kept (GPTConfig has no field for it): it only makes transformers' eager attention
        compute its scores in fp32 in half precision, which minigpt's SDPA does anyway."""
        d = asdict(self)
        dropout = d.pop("dropout")
        d.update(
            model_type="gpt2",
            architectures=[architecture],
            n_ctx=self.n_positions,
            activation_function="gelu_new",
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            scale_attn_weights=True,
            tie_word_embeddings=True,
            use_cache=True,
        )
        # An id with no row in the model (GPT-2's 50256 kept by a model trained on a tokenizer
        # without <|endoftext|>) is written as null, which transformers reads as "none" instead of
        # warning that it lies outside the vocabulary.
        for name in TOKEN_IDS:
            if isinstance(d[name], int) and not 0 <= d[name] < self.vocab_size:
                d[name] = None
        return d

    @classmethod
    def from_json(cls: type[SomeConfig], path: str | os.PathLike, generation_ids: bool = True) -> SomeConfig:
        """Read config.json, with the token ids of a generation_config.json beside it: transformers'
        `generate` takes its ids from that file alone when there is one (an id it lacks is none),
        over config.json's. (Its sampling settings are not read: minigpt's `generate` takes those
        as arguments.) `generation_ids=False` keeps config.json's own ids, which transformers'
        `model.config` holds (an export writes them back: scripts/export_checkpoint.py)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"no config.json at {path}")
        d = read_json(path)
        generation, ids_source = ids_file(path), None
        if isinstance(d, dict) and generation != path and generation_ids:
            g = read_json(generation)
            if not isinstance(g, dict):
                raise ValueError(f"{generation} must hold a JSON object, got {type(g).__name__}")
            d, ids_source = d | {k: g.get(k) for k in TOKEN_IDS}, str(generation)
        # The files by their paths: an error says which checkpoint's config.json it means.
        return cls.from_hf_dict(d, source=str(path), ids_source=ids_source)

    def save_json(self, path: str | os.PathLike, architecture: str = "GPT2LMHeadModel", extra: dict | None = None) -> None:
        """Write `config.json` atomically (temp name, then rename)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        d = self.to_hf_dict(architecture) | (extra or {})
        atomic_write_text(path, json.dumps(d, indent=2) + "\n")

    # Token ids and tokenizers. A model's ids mean something only with its own tokenizer, so the
    # CLI and the text functions check that they fit. A "stale EOS" is an eos_token_id the model
    # has no row for (null, or GPT-2's 50256 kept by a smaller vocabulary): texts then end at the
    # tokenizer's EOS instead.

    @property
    def eos_ids(self) -> list[int]:
        """The ids that end a text, as a list: one, several where config.json holds a list (as some
        HF configs do), or none. Generation stops on any of them, as transformers' does; the first
        the model has is the one a finished row is padded with, unless a pad_token_id is named."""
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, list) else [self.eos_token_id]

    def fits_tokenizer(self, vocab_size: int, eos_token_id: int | None) -> bool:
        """Whether a tokenizer of `vocab_size` ids, its EOS (end-of-text) id `eos_token_id`, can be this model's own.

        An id is only a row number, so what can be compared is the size and the EOS id.
        The model may have *more* rows than the tokenizer has ids: a vocabulary padded for faster
        matmuls (nanoGPT pads GPT-2's 50,257 to 50,304) keeps the tokenizer's ids and never sees the
        extra rows. So a smaller tokenizer fits only when its EOS id is known and is the
        model's (one of them, where config.json lists several), which another tokenizer's (the
        4,096-token Shakespeare one's is 4095) is not.
        A config whose EOS id is no row of the model (`has_stale_eos`) tells nothing:
        then only the size is compared.
        """
        if self.has_stale_eos:
            return vocab_size == self.vocab_size
        fits = vocab_size == self.vocab_size or (vocab_size < self.vocab_size and eos_token_id is not None)
        return fits and (eos_token_id is None or eos_token_id in self.eos_ids)  # one of several EOS ids fits too

    def tokenizer_mismatch(self, vocab_size: int, eos_token_id: int | None, model: str = "the model",
                           tokenizer: str = "the tokenizer") -> str | None:
        """Why a tokenizer is not this model's own (`fits_tokenizer`), in the words every caller's
        error starts with (naming `model` and `tokenizer` as it knows them); None when it fits."""
        if self.fits_tokenizer(vocab_size, eos_token_id):
            return None
        def eos(ids) -> str:
            return "no EOS" if ids is None else f"EOS = {ids}"

        return (f"{model} has a {self.vocab_size}-token vocabulary ({eos(self.eos_token_id)}), but {tokenizer} "
                f"has {vocab_size} ({eos(eos_token_id)}): its ids would mean other tokens to the model")

    @property
    def has_stale_eos(self) -> bool:
        """config.json names no EOS the model has a row for: null, or GPT-2's 50256 in a
        smaller vocabulary, as `minigpt train` wrote before it took the tokenizer's (its checkpoints
        still load). Of a list of EOS ids, one such id makes the list stale: it was written for
        another vocabulary. The CLI and the text functions then end texts at the tokenizer's."""
        return not self.eos_ids or any(not 0 <= t < self.vocab_size for t in self.eos_ids)

    @property
    def has_bos(self) -> bool:
        """Whether bos_token_id is a token of the model: an empty prompt can start from it."""
        return self.bos_token_id is not None and 0 <= self.bos_token_id < self.vocab_size

    def replace_stale_eos(self, eos_token_id: int | None) -> bool:
        """Take the tokenizer's EOS id in place of a stale one (`has_stale_eos`), as the
        begin token too (GPT-2 uses one token for both). Returns whether it did."""
        if not self.has_stale_eos or eos_token_id is None:
            return False
        self.eos_token_id = self.bos_token_id = eos_token_id
        return True
