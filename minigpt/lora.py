"""LoRA: fine-tune a big frozen matrix through a small low-rank update.

Where it sits: fine-tuning (`minigpt/finetune.py`, strategy "lora") wraps some of GPT's
`nn.Linear` projections (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`) before training,
and each checkpoint is saved with the adapters merged into plain weights (`lora_merged`, for the
time of the save; `merge_lora` for good), so it is an ordinary GPT-2 that `transformers` opens.

The idea (Hu et al., 2021): the change a fine-tune makes to a weight W (out, in) has low rank,
so learn it as ΔW = B @ A with A (r, in) and B (out, r), r ≪ min(in, out). W stays frozen; only
A and B train, r·(in + out) numbers instead of in·out. B starts at zero, so before the first step
the wrapped layer computes exactly what the pretrained one did. The update is scaled by
alpha / r, which the paper found spares retuning the learning rate when the rank changes (only
roughly: rsLoRA, Kalajdzievski 2023, shows alpha / sqrt(r) keeps the step size rank-independent).

The adapters alone are a few MB where the model is GBs: `save_adapters` writes them in PEFT's
layout (`adapter_config.json` + `adapter_model.safetensors`), which `peft.PeftModel.from_pretrained`
puts on transformers' GPT-2 and `load_adapters` on minigpt's, from either library.

Not handled: unmerging (`merge_lora` is one-way; `lora_merged` merges for the time of a save and
puts back the pretrained weights it copied), and adapters on the embeddings.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn as nn

from minigpt.checks import as_count, as_real, check_rate, first_few
from minigpt.files import atomic_path, atomic_write_text, check_regular_file, no_follow, read_json

# GPT-2's four projection matrices per block, by the names they carry in every checkpoint.
DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def target_names(targets: tuple[str, ...] | str) -> tuple[str, ...]:
    """LoRA targets as a tuple: "c_attn, c_proj" (as the CLI's flag spells them) is two names, not its characters."""
    return tuple(t.strip() for t in targets.split(",") if t.strip()) if isinstance(targets, str) else tuple(targets)


def check_lora_args(base: nn.Linear, rank: int, alpha: float, dropout: float,
                    name: str = "the layer") -> tuple[int, float, float]:
    """Refuse an adapter of this rank, alpha and dropout on `base` (named `name` in errors); return
    them as a plain int and floats (a NumPy alpha would fail adapter_config.json's JSON)."""
    rank = as_count("LoRA rank", rank)  # 2.5 would fail in torch.empty
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if rank > min(base.in_features, base.out_features):
        raise ValueError(f"LoRA rank {rank} exceeds {name}'s smaller side "
                         f"min({base.in_features}, {base.out_features}); a low-rank update must be lower rank")
    alpha = as_real("LoRA alpha", alpha)  # "16" would fail in math.isfinite as "must be real number"
    dropout = check_rate("LoRA dropout", dropout)
    # The update is scaled by alpha / rank: NaN or inf makes every output NaN, and 0 multiplies B's
    # gradient by 0 too, so B stays 0 and the run trains nothing (its weights equal --init's).
    # A negative alpha only flips the sign of an update that B learns anyway: refused as a slip.
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha (--lora-alpha) must be a finite number > 0, got {alpha}: it scales the update "
                         "by alpha / rank, and at 0 the adapters never train")
    return rank, alpha, dropout


class LoRALinear(nn.Module):
    """`base(x) + (alpha / rank) · B(A(dropout(x)))`, with `base` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        """Wrap `base` (frozen here) with a rank-`rank` update scaled by `alpha / rank`; `dropout` is
        the rate on the adapter's input only (PEFT's lora_dropout), 0 for none."""
        super().__init__()
        rank, alpha, dropout = check_lora_args(base, rank, alpha, dropout)
        self.base = base
        self.base_trained = [p.requires_grad for p in base.parameters()]  # given back by `merged`
        self.base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))  # (out, r): zero → ΔW = 0 at start
        # A gets nn.Linear's default init and B starts at 0: the product is 0, so the layer starts as
        # the pretrained one. B's gradient (through A·x) is not 0, so B moves on the first step. A's
        # *gradient* is 0 on the first step (it goes through B = 0), so then only weight decay
        # (AdamW decays A and B too) changes A: by a factor 1 - lr·weight_decay. From the second
        # step its gradient moves it. Were both 0, neither would ever move.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        # A new module starts in training mode; take the mode of the layer it replaces, or adapters
        # put into an eval-mode model (GPT.from_pretrained returns one) would keep their dropout on.
        self.train(base.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two thin matmuls (in → r → out) instead of forming ΔW (out, in): cheaper for small r.
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()  # (..., out)
        return self.base(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        """The plain `nn.Linear` with W + (alpha / r)·B@A: same outputs (dropout off), no adapter,
        and its parameters trainable or not as they were before it was wrapped."""
        with torch.no_grad():
            self.base.weight += self.scaling * (self.lora_B @ self.lora_A)  # (out, in)
        for p, trained in zip(self.base.parameters(), self.base_trained):
            p.requires_grad_(trained)
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def inject_lora(
    model: nn.Module,
    targets: tuple[str, ...] | str = DEFAULT_TARGETS,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Wrap every `nn.Linear` whose name ends with one of `targets` in a `LoRALinear`.

    `targets` may be one string, "c_attn" or "c_attn, c_proj" (as `apply_strategy` takes them).
    Matching is on whole name components, so "c_proj" selects both `attn.c_proj` and
    `mlp.c_proj`, and "attn.c_proj" only the first. Returns the wrapped modules' names.
    Only the adapters' A and B have requires_grad afterwards *inside the wrapped layers*; the
    rest of the model is left as it was (`finetune.apply_strategy` freezes it). Every layer is
    checked before the first is wrapped, so a refused call leaves the model as it was.
    """
    chosen = find_lora_targets(model, targets, rank, alpha, dropout)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return chosen


def check_no_adapters(model: nn.Module) -> None:
    """Refuse a model that already has adapters: new ones would wrap them, and a strategy that
    freezes by block (partial) would train some and freeze others."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters; merge_lora it first or start from a fresh model")


def target_matches(name: str, t: str) -> bool:
    """Whether the target `t` names the layer `name`: the whole name or its last parts, as PEFT matches."""
    return name == t or name.endswith("." + t)


def find_lora_targets(model: nn.Module, targets: tuple[str, ...] | str, rank: int, alpha: float, dropout: float) -> list[str]:
    """The names of the layers `inject_lora` would wrap, each checked for these adapters; changes nothing."""
    targets = target_names(targets)  # "c_attn" is one name, not six letters
    check_no_adapters(model)
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]

    # A weight shared with another module (GPT-2's lm_head *is* wte) cannot take an adapter: merging
    # ΔW into it would change the other module too (every input embedding), so the merged model
    # would no longer compute what the adapted one did.
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1

    def is_tied(name: str) -> bool:
        return uses[id(model.get_submodule(name).weight)] > 1

    chosen = [name for name in linear_names if any(target_matches(name, t) for t in targets)]
    # Every target must name a layer: one that names none (a typo beside good ones, "attn.c_attn,
    # attn.cproj") would otherwise drop its adapters silently while the others train.
    unmatched = [t for t in targets if not any(target_matches(name, t) for name in linear_names)]
    if unmatched or not chosen:
        # The names a target can take: each layer's within its block ("h.3.attn.c_proj" → "attn.c_proj").
        kinds = sorted({re.sub(r"^(?:.*\.)?\d+\.", "", n) for n in linear_names if not is_tied(n)})
        which = f"LoRA target(s) {unmatched}" if unmatched and len(unmatched) < len(targets) else f"LoRA targets {list(targets)}"
        raise ValueError(f"{which} match no nn.Linear in the model; the layers that can take adapters are {kinds} "
                         "(a last part alone, such as c_proj, names every layer it ends)")
    tied = [name for name in chosen if is_tied(name)]
    if tied:
        raise ValueError(f"LoRA cannot adapt {tied}: its weight is tied to another module's (GPT-2's lm_head is the "
                         f"input embedding wte), and merging would change both; choose among {list(DEFAULT_TARGETS)}")
    for name in chosen:
        check_lora_args(model.get_submodule(name), rank, alpha, dropout, name)
    return chosen


def lora_layers(model: nn.Module) -> list[tuple[nn.Module, str, LoRALinear]]:
    """Every adapter in `model` as (parent module, attribute name, LoRALinear): where to put the
    plain layer back."""
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    return [(model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2], model.get_submodule(name))
            for name in wrapped]


@contextmanager
def lora_merged(model: nn.Module) -> Iterator[nn.Module]:
    """The model with every adapter folded into its weight (`LoRALinear.merged`, as `merge_lora`),
    for the time of the `with` block (a save), then exactly as it was: the same modules, and each
    pretrained W back bit for bit (W + ΔW - ΔW would round), from a copy kept in CPU memory.

    Why not merge a deep copy: that is a second model on the training device at every checkpoint
    (+6 GB for gpt2-xl in fp32 on a GPU), where LoRA is chosen to save memory; here the device
    holds one layer's ΔW at a time."""
    swapped: list[tuple[nn.Module, str, LoRALinear, torch.Tensor]] = []
    try:
        for parent, child, lora in lora_layers(model):
            swapped.append((parent, child, lora, lora.base.weight.detach().to("cpu", copy=True)))
            setattr(parent, child, lora.merged())
        yield model
    finally:
        for parent, child, lora, pretrained in swapped:
            with torch.no_grad():
                lora.base.weight.copy_(pretrained)
            lora.base.requires_grad_(False)  # (merged() gave back the flags it had before it was wrapped)
            setattr(parent, child, lora)


M = TypeVar("M", bound=nn.Module)


def merge_lora(model: M) -> M:
    """Fold every adapter into its base weight, in place, and return the model: a plain GPT (or
    GPTClassifier) again, which saves in Hugging Face's layout. (Typed with `M`, the model's own
    class, so that `merge_lora(clf).save_pretrained(...)` type-checks.)"""
    for parent, child, lora in lora_layers(model):
        setattr(parent, child, lora.merged())
    return model


# ---- the adapters alone, in PEFT's layout --------------------------------------------------------

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
# Where `minigpt finetune --strategy lora` writes them, in each checkpoint it saves: a subfolder, for
# transformers, given a folder with adapter_config.json, loads the adapters (PEFT) instead of the model.
ADAPTER_DIR = "adapter"
PEFT_PREFIX = "base_model.model."  # PEFT saves the wrapped model's tensors under this name
# PEFT options that change what the adapters compute (a per-layer rank, DoRA's magnitudes,
# rsLoRA's alpha / sqrt(r), trained biases or heads, another variant's own weights...): LoRALinear
# has none of them, so an adapter that uses one is refused rather than loaded into something that
# computes another function.
PEFT_OPTIONS_OFF = ("rank_pattern", "alpha_pattern", "use_dora", "use_rslora", "lora_bias", "modules_to_save",
                    "layers_to_transform", "layers_pattern", "target_parameters", "trainable_token_indices",
                    "layer_replication", "use_qalora", "alora_invocation_tokens", "velora_config",
                    "monteclora_config", "kasa_config", "arrow_config", "use_bdlora")
# PEFT's init_lora_weights values that rewrite the base weights as the adapters are made: PiSSA,
# CorDA, OLoRA and LoRA-GA subtract the first B·A from W ("pissa_niter_4" is PiSSA too), and LoftQ
# quantizes W. Their A and B compute the fine-tuned model only over that changed base, not over
# the original one that load_adapters puts them on (an audit measured logits 0.23 off).
BASE_REWRITING_INITS = ("pissa", "corda", "olora", "lora_ga", "loftq")


def save_adapters(model: nn.Module, path: str | Path, base: str | None = None) -> None:
    """Write `model`'s adapters alone (every LoRALinear's A and B) to the folder `path`, as PEFT
    does: `PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), path)`, the same on
    `GPT.from_pretrained(base)`, or `load_adapters(GPT.from_pretrained(base), path)` gives the
    adapted model back. `base` (the pretrained model's name or folder) is recorded as PEFT's
    `base_model_name_or_path`."""
    from minigpt.checkpoint import stream_safetensors
    from minigpt.model import GPT

    if not isinstance(model, GPT):  # a classifier's head trains whole: the adapters alone are not the model
        raise ValueError(f"adapters alone are saved for a GPT language model, not a {type(model).__name__}: "
                         "save it merged (merge_lora, then save_pretrained)")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ValueError("the model has no LoRA adapters to save (inject_lora, or apply_strategy(model, 'lora'), adds them)")
    settings = {(m.rank, m.alpha, m.dropout.p) for m in layers.values()}
    if len(settings) > 1:  # one rank, alpha and dropout for all, as inject_lora makes them
        raise ValueError(f"adapters with different rank, alpha or dropout {sorted(settings)} cannot be saved in one file")
    (rank, alpha, dropout), = settings
    tensors = {f"{PEFT_PREFIX}{name}.{ab}.weight": getattr(m, ab) for name, m in layers.items() for ab in ("lora_A", "lora_B")}
    # task_type null: PEFT's CAUSAL_LM wrapper asks the model for transformers' generation hooks
    # (prepare_inputs_for_generation), which minigpt's GPT has not, so it could not open the folder.
    # transformers' GPT-2 takes null too, and generates through it. auto_mapping is what PEFT writes
    # beside a null task_type, for its auto loaders (AutoPeftModelForCausalLM) to know the base's class.
    config = {"peft_type": "LORA", "task_type": None,
              "auto_mapping": {"base_model_class": "GPT2LMHeadModel", "parent_library": "transformers"},
              "base_model_name_or_path": base,
              "r": rank, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": list(layers),
              "fan_in_fan_out": True,  # transformers' GPT-2 keeps W as (in, out) (Conv1D); minigpt's Linear as (out, in)
              "bias": "none", "inference_mode": True}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # As a checkpoint's weights are written (a failed write is the OSError it is: a full disk, say).
    with atomic_path(path / ADAPTER_WEIGHTS) as tmp, open(tmp, "wb", opener=no_follow) as f:
        stream_safetensors(tensors, f)
    atomic_write_text(path / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")


def load_adapters(model: nn.Module, path: str | Path) -> list[str]:
    """Put the LoRA adapters saved in the folder `path` (by `save_adapters`, or by PEFT on
    transformers' GPT-2) on `model`, with their rank, alpha, dropout and targets; returns the
    adapted layers' names. `merge_lora(model)` then folds them in. Everything is checked before the
    model is changed: a refused file leaves it as it was."""
    from minigpt.checkpoint import open_safetensors, refuse_broken_link

    path = Path(path)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        # As the base's weights are checked: a FIFO or device there is named as what it is, not as a
        # missing file (as is_file alone would have it); a FIFO would block the read (safe_open's too).
        refuse_broken_link(path / name)
        check_regular_file(path / name)
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} holds no {name}: not a folder of LoRA adapters (save_adapters, or PEFT's save_pretrained, writes one)")
    config = read_json(path / ADAPTER_CONFIG)
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ValueError(f"{path / ADAPTER_CONFIG} is not a LoRA adapter's config (peft_type "
                         f"{config.get('peft_type') if isinstance(config, dict) else None!r}, not 'LORA')")
    check_computes_lora(config, path / ADAPTER_CONFIG)
    rank, alpha, dropout = config.get("r"), config.get("lora_alpha"), config.get("lora_dropout", 0.0)
    chosen = find_lora_targets(model, peft_targets(model, config), rank, alpha, dropout)
    # open_safetensors names the file it cannot read (truncated, a Git LFS pointer: with how to fetch it).
    with open_safetensors(path / ADAPTER_WEIGHTS) as sf:
        tensors = {key: sf.get_tensor(key) for key in sf.keys()}
    expected = {f"{PEFT_PREFIX}{name}.{ab}.weight": (name, ab) for name in chosen for ab in ("lora_A", "lora_B")}
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{path / ADAPTER_WEIGHTS} does not fit the model's layers {chosen}: "
                         f"missing {first_few(missing, quoted=True)}, unexpected {first_few(unexpected, quoted=True)}")
    for key, (name, ab) in expected.items():
        base = model.get_submodule(name)
        shape = (rank, base.in_features) if ab == "lora_A" else (base.out_features, rank)
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{key} has shape {tuple(tensors[key].shape)}; {name} with rank {rank} needs {shape}")
        if not tensors[key].is_floating_point():  # copy_ would silently cast integers to float
            raise ValueError(f"tensor {key!r} in {path / ADAPTER_WEIGHTS} has dtype {tensors[key].dtype}; "
                             "LoRA's A and B are floating point")
    inject_lora(model, chosen, rank, alpha, dropout)
    with torch.no_grad():
        for key, (name, ab) in expected.items():
            getattr(model.get_submodule(name), ab).copy_(tensors[key])
    return chosen


def check_computes_lora(config: dict, source: Path) -> None:
    """Refuse an adapter_config.json (`source`) whose adapters compute what LoRALinear does not."""
    used = [k for k in PEFT_OPTIONS_OFF if config.get(k) not in (None, False, {}, [])]
    used += ["bias"] if config.get("bias", "none") != "none" else []
    if used:
        raise ValueError(f"{source} sets {', '.join(f'{k}={config[k]!r}' for k in used)}: "
                         "minigpt's LoRA has a rank, an alpha, a dropout and targets, and computes no other adapter")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_REWRITING_INITS):
        raise ValueError(f"{source} sets init_lora_weights={init!r}: PEFT changed the base weights when it made these "
                         "adapters, so they fit only that changed base, not the original one they would be put on. "
                         "Save them from PEFT as a plain LoRA of the original base: peft_model.save_pretrained(folder, "
                         "path_initial_model_for_weight_conversion=the folder of the adapters as first made) "
                         "(for PiSSA, CorDA, OLoRA and LoRA-GA; LoftQ's adapters fit its quantized base only)")


def peft_targets(model: nn.Module, config: dict) -> list[str]:
    """The layers an adapter_config.json names, as PEFT reads it: `target_modules` (one string is a
    regular expression for whole layer names; a list names layers by their last parts), less those
    `exclude_modules` names, in the same two forms (it only narrows the targets). As in PEFT, a
    listed target that names no module here is passed over where another names one: a config written
    for several architectures (["c_attn", "q_proj", "v_proj"]) fits GPT-2 by its c_attn. One that
    names a module that is no Linear stays, for `find_lora_targets` to refuse by name: minigpt's LoRA
    adapts Linear layers alone (PEFT refuses attn too, but adapts the embedding wte). The weights
    file must hold the A and B of exactly the layers chosen (`load_adapters` checks it)."""
    targets = given = config.get("target_modules") or []
    excluded = config.get("exclude_modules") or []
    modules = [name for name, _ in model.named_modules()]
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if isinstance(targets, str):
        targets = [name for name in linear if re.fullmatch(targets, name)]
    found = [t for t in targets if any(target_matches(name, t) for name in modules)]
    if not found or not excluded or any(not any(target_matches(name, t) for name in linear) for t in found):
        return found or list(targets)  # none found: as the file names them, for find_lora_targets to refuse

    def is_excluded(name: str) -> bool:
        return bool(re.fullmatch(excluded, name)) if isinstance(excluded, str) else any(target_matches(name, e) for e in excluded)

    chosen = [name for name in linear if any(target_matches(name, t) for t in found) and not is_excluded(name)]
    if not chosen:
        raise ValueError(f"exclude_modules {excluded!r} leaves out every layer that target_modules {given!r} names: "
                         "no layer is left to adapt")
    return chosen


def adapter_base(path: str | Path) -> str | None:
    """The base model named by the adapters in folder `path` (PEFT's `base_model_name_or_path`, a
    LoRA run's --init), or None where `path` holds no adapters or they name no base."""
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = read_json(config)
    base = base.get("base_model_name_or_path") if isinstance(base, dict) else None
    return base if isinstance(base, str) and base else None


def check_adapter_chain(path: str | Path) -> None:
    """Refuse adapters whose bases, followed from folder to folder (a base may itself be adapters
    alone), come back to one already seen: loading them would recurse until Python gives up."""
    chain = [Path(path)]
    while (base := adapter_base(chain[-1])) is not None and not (Path(base) / "config.json").exists():
        if Path(base).resolve() in {p.resolve() for p in chain}:
            loop = " → ".join(map(str, [*chain, base]))
            raise ValueError(f"the LoRA adapters in {path} name base models that loop back ({loop}): fix "
                             f"base_model_name_or_path in {ADAPTER_CONFIG}")
        chain.append(Path(base))


def load_adapted(path: Path, dtype=None, device=None, model_class=None) -> nn.Module:
    """`GPT.from_pretrained` of a folder of adapters alone: the base model they name, with them folded
    in (`merge_lora`: a plain GPT, as fast as the base; `model_class`, a subclass of GPT, builds
    that class). transformers with PEFT installed opens such a folder the same way; a relative base
    is read from the working directory, as there."""
    from minigpt.model import GPT

    model_class = model_class or GPT
    base = adapter_base(path)
    if base is None:
        raise FileNotFoundError(f"{path} holds LoRA adapters alone, and its {ADAPTER_CONFIG} names no base model "
                                f"(base_model_name_or_path): load the base, then minigpt.lora.load_adapters(model, {str(path)!r})")
    check_adapter_chain(path)
    try:
        model = model_class.from_pretrained(base, dtype=dtype, device=device)
    except (OSError, ValueError) as e:  # the base's own error, said as the adapters' base
        raise type(e)(f"{path} holds LoRA adapters for the base model {base!r} (its {ADAPTER_CONFIG}'s "
                      f"base_model_name_or_path), which did not load: {e}") from None
    load_adapters(model, path)
    return merge_lora(model).eval()
