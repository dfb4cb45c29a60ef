"""TrainSettings: every setting of a training run, its flag, its group and its check.

Each field declares its command-line group and help text, so the parser of ``uniq-quant
train`` is generated from this one definition. Values come, by rising priority, from the field
defaults, a YAML recipe (``--config``; keys are field names, ``-`` and ``_`` alike) and the flags.
The resolved settings are saved as config.yaml in the run folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from uniq_quant._validation import check_choice
from uniq_quant.config import FLOAT, QuantConfig
from uniq_quant.schedule import EMULATIONS

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
GROUPS = ("data", "model", "quantization", "schedule", "optimization", "run")


def _opt(default: object, group: str, help: str, **extra: object) -> Any:
    return field(default=default, metadata={"group": group, "help": help, **extra})


@dataclass(frozen=True)
class TrainSettings:
    """The resolved settings of one ``uniq-quant train`` run (see each field's help)."""

    # data
    dataset: str = _opt("mnist", "data", "dataset name (mnist, fashion-mnist, digits, ...)")
    data: str | None = _opt(None, "data", "dataset folder (cifar, imagenet, idx folders)")
    batch_size: int = _opt(128, "data", "images per batch per process")
    workers: int = _opt(2, "data", "data loader worker processes (0: load in-process)")
    image_size: int | None = _opt(None, "data", "resize images to this side (default: native)")

    # model
    model: str = _opt("small_cnn", "model", "our model name, or tv:NAME for torchvision")
    init: str | None = _opt(None, "model", "float checkpoint to start from (torchvision format ok)")

    # quantization
    weight_bits: int = _opt(4, "quantization", "bits per weight, 1..8")
    act_bits: int | None = _opt(8, "quantization", "bits per activation, 2..8, or 'float'")
    first_layer_bits: int | str | None = _opt(None, "quantization", "first layer bits or 'float'")
    last_layer_bits: int | str | None = _opt(None, "quantization", "last layer bits or 'float'")
    per_channel: bool = _opt(False, "quantization", "fit one distribution per output channel")
    fit: str = _opt("gaussian", "quantization", "weight distribution fit: gaussian or empirical")
    act_noise: bool = _opt(False, "quantization", "noise instead of rounding for noisy layers")
    learn_levels: bool = _opt(False, "quantization", "frozen layers train their k weight levels")
    overrides: tuple[str, ...] = _opt((), "quantization", "PATTERN=BITS per layer, repeatable")
    gbops_budget: float | None = _opt(
        None, "quantization", "choose each layer's weight bits to fit this many GBOPs per image"
    )
    bits_candidates: str = _opt("2,3,4,6,8", "quantization", "widths --gbops-budget chooses from")

    # schedule
    float_epochs: int = _opt(1, "schedule", "epochs of float training before UNIQ (0 with --init)")
    num_stages: int | None = _opt(None, "schedule", "blocks of layers (default: one per layer)")
    stage_epochs: int = _opt(1, "schedule", "epochs per stage")
    stage_steps: int | None = _opt(None, "schedule", "steps per stage (overrides stage-epochs)")
    final_epochs: int = _opt(0, "schedule", "epochs with every layer quantized at the end")
    emulation: str = _opt(
        "noise", "schedule", "the current block trains with noise (UNIQ) or rounding (STE)"
    )
    bn_batches: int = _opt(
        50,
        "schedule",
        "training batches (at most one epoch) to re-estimate BatchNorm statistics with once "
        "every layer is frozen; 0 keeps those of training",
    )

    # optimization
    optimizer: str = _opt("sgd", "optimization", "sgd or adamw")
    lr: float = _opt(0.05, "optimization", "learning rate of float training")
    uniq_lr: float | None = _opt(None, "optimization", "learning rate of UNIQ (default: lr / 10)")
    momentum: float = _opt(0.9, "optimization", "SGD momentum")
    weight_decay: float = _opt(5e-4, "optimization", "weight decay (not on BatchNorm or biases)")
    lr_schedule: str = _opt("cosine", "optimization", "cosine or step (x0.1 at 1/2 and 3/4)")
    warmup_epochs: float = _opt(0.0, "optimization", "linear warm-up at the start of each phase")
    label_smoothing: float = _opt(0.0, "optimization", "label smoothing of the cross-entropy")
    amp: bool = _opt(True, "optimization", "bfloat16 mixed precision on a GPU")
    channels_last: bool = _opt(True, "optimization", "channels-last memory format on a GPU")
    compile: bool = _opt(False, "optimization", "train through torch.compile (evaluation eager)")

    # run
    out: str | None = _opt(None, "run", "run folder (default: runs/MODEL-DATASET-wWaA)")
    resume: bool = _opt(False, "run", "continue the run in --out from its last checkpoint")
    seed: int = _opt(0, "run", "random seed")
    device: str = _opt("auto", "run", "auto, cpu or cuda")
    max_steps_per_epoch: int | None = _opt(None, "run", "cap steps per epoch (smoke tests)")
    max_eval_batches: int | None = _opt(None, "run", "cap validation batches (smoke tests)")
    log_every: int = _opt(50, "run", "log a line every N steps when not on a terminal")

    def __post_init__(self) -> None:
        check_choice(self.optimizer, OPTIMIZERS, "--optimizer")
        check_choice(self.lr_schedule, LR_SCHEDULES, "--lr-schedule")
        check_choice(self.device, DEVICES, "--device")
        check_choice(self.emulation, EMULATIONS, "--emulation")
        for name in ("batch_size", "stage_epochs", "log_every"):
            _check_int(getattr(self, name), f"--{_flag(name)}", minimum=1)
        for name in ("workers", "float_epochs", "final_epochs", "bn_batches", "seed"):
            _check_int(getattr(self, name), f"--{_flag(name)}", minimum=0)
        optional = ("num_stages", "stage_steps", "max_steps_per_epoch", "max_eval_batches")
        for name in (*optional, "image_size"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), f"--{_flag(name)}", minimum=1)
        for name in ("lr", "uniq_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"--{_flag(name)} must be a positive number, got {value!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.warmup_epochs < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("--warmup-epochs, --momentum and --weight-decay must be >= 0")
        object.__setattr__(self, "overrides", tuple(self.overrides))
        self.quant_config()  # validates the quantization group
        if self.gbops_budget is not None and not self.gbops_budget > 0:
            raise ValueError(f"--gbops-budget must be a positive number, got {self.gbops_budget!r}")
        self.candidate_bits()

    @property
    def uniq_learning_rate(self) -> float:
        """The UNIQ phase's learning rate: ``uniq_lr``, or a tenth of ``lr``."""
        return self.uniq_lr if self.uniq_lr is not None else self.lr / 10

    def quant_config(self) -> QuantConfig:
        """The QuantConfig of this run."""
        return QuantConfig(
            weight_bits=self.weight_bits,
            act_bits=self.act_bits,
            first_layer_bits=self.first_layer_bits,
            last_layer_bits=self.last_layer_bits,
            per_channel=self.per_channel,
            fit=self.fit,
            act_noise=self.act_noise,
            learn_levels=self.learn_levels,
            overrides=parse_overrides(self.overrides),
        )

    def candidate_bits(self) -> tuple[int, ...]:
        """``bits_candidates`` ("2,3,4") as sorted distinct widths, each in 1..8."""
        try:
            widths = {int(part) for part in str(self.bits_candidates).split(",") if part.strip()}
        except ValueError:
            widths = set()
        if not widths or not all(1 <= w <= 8 for w in widths):
            raise ValueError(
                f"--bits-candidates must list widths in 1..8 separated by commas, e.g. 2,3,4,8; "
                f"got {self.bits_candidates!r}"
            )
        return tuple(sorted(widths))

    def run_name(self) -> str:
        """Default run folder name: MODEL-DATASET-wWaA (MODEL-DATASET-GgbopsaA with a budget)."""
        act = "f" if self.act_bits is None else self.act_bits
        weights = (
            f"w{self.weight_bits}" if self.gbops_budget is None else f"{self.gbops_budget:g}gbops"
        )
        return f"{self.model.replace(':', '-')}-{self.dataset}-{weights}a{act}"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for config.yaml."""
        data = dataclasses.asdict(self)
        data["overrides"] = list(self.overrides)
        return data


def parse_overrides(items: tuple[str, ...]) -> dict[str, int | str]:
    """``("fc=8", "layer4.*=float")`` -> ``{"fc": 8, "layer4.*": "float"}``."""
    overrides: dict[str, int | str] = {}
    for item in items:
        pattern, sep, bits = str(item).partition("=")
        if not sep or not pattern:
            raise ValueError(
                f"--override must look like PATTERN=BITS (fc=8, layer4.*=float), got {item!r}"
            )
        overrides[pattern] = bits if bits == FLOAT else _parse_int(bits, "--override bits")
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per TrainSettings field, in their groups."""
    parser.add_argument("--config", metavar="YAML", help="recipe file whose values flags override")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in fields(TrainSettings):
        flag = f"--{_flag(f.name)}"
        group = groups[f.metadata["group"]]
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if f.type == "bool":
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif f.name == "overrides":
            group.add_argument(
                "--override",
                dest="overrides",
                action="append",
                metavar="PATTERN=BITS",
                help=help_text,
            )
        else:
            group.add_argument(
                flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text
            )


def resolve(args: argparse.Namespace, recipe: Mapping[str, Any] | None = None) -> TrainSettings:
    """Settings from defaults, then ``recipe`` (or the ``--config`` file), then the flags."""
    if recipe is None and getattr(args, "config", None):
        recipe = load_recipe(args.config)
    values = dict(recipe or {})
    for f in fields(TrainSettings):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return settings_from_dict(values)


def settings_from_dict(values: Mapping[str, Any]) -> TrainSettings:
    """Build TrainSettings from strings or typed values; unknown keys are an error."""
    known = {f.name: f for f in fields(TrainSettings)}
    typed = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(f"unknown setting {key!r}; known settings: {', '.join(known)}")
        typed[name] = _convert(known[name], value)
    return TrainSettings(**typed)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe: a mapping of setting names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; see configs/ for examples")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(
            f"recipe {path} must be a mapping of setting: value, got {type(data).__name__}"
        )
    return data


def _convert(f: dataclasses.Field, value: Any) -> Any:
    """Turn a flag string (or YAML value) into the field's type."""
    if value is None or f.name == "overrides":
        return tuple(value or ()) if f.name == "overrides" else None
    kind = f.type
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("none", "null", "") and "None" in kind:
        return None
    if f.name == "act_bits" and text == FLOAT:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"--{_flag(f.name)} must be true or false, got {value!r}")
    if text == FLOAT and "str" in kind:
        return FLOAT
    if kind.startswith("int"):
        return _parse_int(value, f"--{_flag(f.name)}")
    if kind.startswith("float"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--{_flag(f.name)} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"--{_flag(f.name)} must be finite, got {value!r}")
        return number
    return value if not isinstance(value, str) else value.strip()


def _parse_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _check_int(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")
