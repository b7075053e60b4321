"""The one hyperparameter spec: names, types, defaults, help and tuning ranges.

CLI flags (`imgclf train --lr ...`), SageMaker's hyperparameters.json (every value a JSON string), the README
table and the tuners are all generated from `SPEC`; nothing here is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgclf.errors import UserError


@dataclass(frozen=True)
class Continuous:
    """A real range for tuners; `log` matches SageMaker's ScalingType 'Logarithmic'."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Integer:
    low: int
    high: int


@dataclass(frozen=True)
class Categorical:
    values: tuple


@dataclass(frozen=True)
class Param:
    name: str  # kebab-case, as the seeds spelled them
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    tuning: Continuous | Integer | Categorical | None = None
    aliases: tuple[str, ...] = ()

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


ARCHITECTURES = ("resnet18", "resnet34", "resnet50")

SPEC: tuple[Param, ...] = (
    Param(
        "lr",
        float,
        0.001,
        "Learning rate (AdamW).",
        tuning=Continuous(0.001, 0.1, log=True),
        aliases=("learning-rate",),
    ),
    Param(
        "batch-size",
        int,
        64,
        "Images per step (per process under DDP).",
        tuning=Categorical((8, 16, 32, 64, 128, 256, 512)),
    ),
    Param("epochs", int, 5, "Maximum number of epochs.", tuning=Integer(2, 10)),
    Param("arch", str, "resnet18", "Backbone architecture.", choices=ARCHITECTURES),
    Param("image-size", int, 224, "Side of the square crop fed to the network, in pixels."),
    Param(
        "train-backbone",
        bool,
        False,
        "Fine-tune all layers. Off: frozen backbone + new head, as the seeds did.",
    ),
    Param(
        "pretrained-weights",
        str,
        "imagenet",
        "'imagenet' (torchvision download or TORCH_HOME cache), a local .pth path (e.g. baked into the "
        "image for network-isolated jobs), or 'none' for random init.",
    ),
    Param("augment", bool, True, "Random crop + horizontal flip on training images."),
    Param(
        "cache-features",
        bool,
        True,
        "With a frozen backbone and augment off, run the backbone once and train the head on cached "
        "features: epochs cost seconds; trade-off: no augmentation and the features live in memory.",
    ),
    Param("patience", int, 3, "Early stopping: epochs without valid_loss improvement; 0 turns it off."),
    Param("weight-decay", float, 0.0001, "AdamW weight decay."),
    Param(
        "valid-fraction", float, 0.1, "Share of train held out (stratified) when there is no valid channel."
    ),
    Param("seed", int, 0, "Random seed for splits, init and shuffling."),
    Param("num-workers", int, -1, "DataLoader workers; -1 picks from the CPU count."),
    Param(
        "amp", bool, True, "Mixed precision (bf16/fp16 autocast) on CUDA; ignored on CPU, where it is slower."
    ),
    Param("debug-train-interval", int, 100, "smdebug: save losses every N training steps."),
    Param("debug-eval-interval", int, 10, "smdebug: save losses every N evaluation steps."),
    Param(
        "debug-collections",
        str,
        "losses",
        "smdebug collections to save, comma-separated (losses, weights, gradients, biases); weights and "
        "gradients cost 4-5x step time.",
    ),
)

BY_NAME: dict[str, Param] = {}
for _p in SPEC:
    for _n in (_p.name, *_p.aliases):
        BY_NAME[_n] = _p


def canonical_name(raw: str) -> str:
    """`batch_size`, `batch-size`, `--batch-size` all name the same hyperparameter."""
    return raw.strip().lstrip("-").replace("_", "-").lower()


def _is_sagemaker_internal(raw: str) -> bool:
    # SageMaker adds sagemaker_job_name, sagemaker_region, _tuning_objective_metric, sagemaker_program...
    return raw.startswith("sagemaker_") or raw.startswith("_")


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def parse_value(param: Param, value: Any) -> Any:
    """Turn a value (JSON string from SageMaker, CLI text, or already typed) into the param's type."""
    if isinstance(value, str):
        text = value.strip()
        # SageMaker SDK v2 JSON-encodes strings: '"128"' arrives for batch_size=128 set as a string.
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
    else:
        text = value
    try:
        if param.type is bool:
            if isinstance(text, bool):
                result = text
            elif str(text).lower() in _TRUE:
                result = True
            elif str(text).lower() in _FALSE:
                result = False
            else:
                raise ValueError
        elif param.type is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            result = int(number)
        elif param.type is float:
            result = float(text)
        else:
            result = str(text)
    except (TypeError, ValueError):
        raise UserError(
            f"Hyperparameter '{param.name}' must be a {param.type.__name__}, got {value!r}."
        ) from None
    if param.choices is not None and result not in param.choices:
        raise UserError(
            f"Hyperparameter '{param.name}' must be one of {', '.join(map(str, param.choices))}; got {result!r}."
        )
    return result


@dataclass(frozen=True)
class Hyperparameters:
    """Typed values; build with `from_mapping`. Attribute names are the kebab names with underscores."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, attr: str) -> Any:
        try:
            return self.values[attr]
        except KeyError:
            raise AttributeError(attr) from None

    def replace(self, **changes: Any) -> Hyperparameters:
        merged = dict(self.values)
        for attr, value in changes.items():
            param = BY_NAME[canonical_name(attr)]
            merged[param.attr] = parse_value(param, value)
        return dataclasses.replace(self, values=merged)

    def to_sagemaker(self) -> dict[str, str]:
        """hyperparameters.json form: every value a string, kebab names."""
        out = {}
        for p in SPEC:
            v = self.values[p.attr]
            out[p.name] = json.dumps(v) if p.type is bool else str(v)
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Hyperparameters:
        """Validate and type a mapping (SageMaker JSON, CLI). Unknown names are an error, not ignored."""
        values = {p.attr: p.default for p in SPEC}
        unknown, seen = [], {}
        for key, value in raw.items():
            if _is_sagemaker_internal(key):
                continue
            param = BY_NAME.get(canonical_name(key))
            if param is None:
                unknown.append(key)
                continue
            if param.attr in seen and seen[param.attr] != key:
                raise UserError(
                    f"Hyperparameter '{param.name}' is given twice: as '{seen[param.attr]}' and '{key}'."
                )
            seen[param.attr] = key
            values[param.attr] = parse_value(param, value)
        if unknown:
            known = ", ".join(p.name for p in SPEC)
            raise UserError(f"Unknown hyperparameter(s): {', '.join(sorted(unknown))}. Known: {known}.")
        _check_ranges(values)
        return cls(values)


def _check_ranges(v: Mapping[str, Any]) -> None:
    problems = []
    if not v["lr"] > 0:
        problems.append("lr must be > 0")
    if v["batch_size"] < 1:
        problems.append("batch-size must be >= 1")
    if v["epochs"] < 1:
        problems.append("epochs must be >= 1")
    if not 16 <= v["image_size"] <= 1024:
        problems.append("image-size must be between 16 and 1024")
    if v["patience"] < 0:
        problems.append("patience must be >= 0")
    if not 0 < v["valid_fraction"] < 1:
        problems.append("valid-fraction must be between 0 and 1 (exclusive)")
    if v["weight_decay"] < 0:
        problems.append("weight-decay must be >= 0")
    if problems:
        raise UserError("Invalid hyperparameters: " + "; ".join(problems) + ".")


def defaults() -> Hyperparameters:
    return Hyperparameters.from_mapping({})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One CLI flag per spec entry (`--batch-size`, `--train-backbone/--no-train-backbone`)."""
    group = parser.add_argument_group("hyperparameters")
    for p in SPEC:
        flags = [f"--{p.name}", *(f"--{a}" for a in p.aliases)]
        if p.type is bool:
            group.add_argument(
                *flags,
                dest=p.attr,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{p.help} (default: {p.default})",
            )
        else:
            group.add_argument(
                *flags,
                dest=p.attr,
                default=None,
                metavar=p.type.__name__.upper(),
                choices=p.choices,
                help=f"{p.help} (default: {p.default})",
            )


def from_arguments(args: argparse.Namespace) -> Hyperparameters:
    given = {p.name: getattr(args, p.attr) for p in SPEC if getattr(args, p.attr, None) is not None}
    return Hyperparameters.from_mapping(given)


def markdown_table() -> str:
    """The README's hyperparameter table (a unit test keeps README in step with SPEC)."""
    rows = ["| name | type | default | tuning range | meaning |", "|---|---|---|---|---|"]
    for p in SPEC:
        rng = ""
        if isinstance(p.tuning, Continuous):
            rng = f"{p.tuning.low}–{p.tuning.high}" + (" (log)" if p.tuning.log else "")
        elif isinstance(p.tuning, Integer):
            rng = f"{p.tuning.low}–{p.tuning.high}"
        elif isinstance(p.tuning, Categorical):
            rng = "{" + ", ".join(map(str, p.tuning.values)) + "}"
        default = json.dumps(p.default) if p.type is bool else p.default
        names = " / ".join(f"`{n}`" for n in (p.name, *p.aliases))
        rows.append(f"| {names} | {p.type.__name__} | `{default}` | {rng} | {p.help} |")
    return "\n".join(rows)
