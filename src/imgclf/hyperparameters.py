"""The one hyperparameter spec: names, types, defaults, help and tuning ranges.

CLI flags (`imgclf train --lr ...`), SageMaker's hyperparameters.json (every value a JSON string), the README
table and the tuners are all generated from `SPEC`; nothing here is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
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


# Every classification model in torchvision.models (`torchvision.models.list_models(module=torchvision.models)`
# under the pinned torchvision 0.29.1; a unit test keeps the two equal). Written out so this module imports without
# torch: imgclf.sagemaker reads the spec in a venv that has no torch. The seeds' ResNets first, then A-Z.
ARCHITECTURES = (
    "resnet18", "resnet34", "resnet50", "alexnet", "convnext_base", "convnext_large", "convnext_small",
    "convnext_tiny", "densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_b0",
    "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
    "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s",
    "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf",
    "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf",
    "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf",
    "regnet_y_8gf", "resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0",
    "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn",
    "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16",
    "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)  # fmt: skip
DATA_FORMATS = ("auto", "imagefolder", "hdf5", "manifest", "webdataset")
CLASS_WEIGHTS = ("none", "auto")

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
    Param(
        "arch",
        str,
        "resnet18",
        "Any torchvision classification model (resnet18, resnet50, efficientnet_b4, convnext_tiny, "
        "mobilenet_v3_large, vit_b_16, ...); the head is replaced for the number of classes.",
        choices=ARCHITECTURES,
    ),
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
    Param(
        "augment",
        bool,
        "auto",
        "Random crop + horizontal flip on training images. auto: on when fine-tuning (train-backbone), off "
        "with a frozen backbone, whose features are then computed once and cached (a linear head gains little "
        "from augmentation; epochs cost seconds instead of a full backbone pass).",
    ),
    Param(
        "cache-features",
        bool,
        True,
        "With a frozen backbone and augment off, run the backbone once and train the head on cached "
        "features: epochs cost seconds; trade-off: no augmentation and the features live in memory.",
    ),
    Param("patience", int, 3, "Early stopping: epochs without valid_loss improvement; 0 turns it off."),
    Param("weight-decay", float, 0.0001, "AdamW weight decay."),
    Param("valid-fraction", float, 0.1, "Share of train held out (stratified) when there is no valid channel."),
    Param(
        "data-format",
        str,
        "auto",
        "Channel layout: imagefolder (a folder of images per class), hdf5 (a .h5/.hdf5 file of id -> image + a CSV of "
        "id,label), manifest (CSV or JSON Lines of path,label), webdataset (.tar shards of KEY.jpg + KEY.cls, "
        "streamed; `imgclf shard` makes them); auto detects it per channel.",
        choices=DATA_FORMATS,
    ),
    Param(
        "labels-file",
        str,
        "",
        "hdf5/manifest: name of the CSV / JSON Lines file in the channel; empty: the only one there.",
    ),
    Param("id-column", str, "id", "hdf5: labels-file column holding the image's key in the HDF5 file."),
    Param("label-column", str, "label", "hdf5/manifest: labels-file column (JSON key) holding the class."),
    Param(
        "path-column",
        str,
        "path",
        "manifest: column (JSON key) holding the image path relative to the channel; 'source-ref' "
        "(SageMaker manifests, s3:// URIs) is used when this one is absent.",
    ),
    Param(
        "sample",
        float,
        0.0,
        "Train on a stratified subsample of the train channel (fixed seed, label proportions kept): N images "
        "(>= 1) or a fraction (< 1); 0 uses everything.",
    ),
    Param(
        "class-weights",
        str,
        "none",
        "auto: weight the loss by inverse class frequency (imbalanced data); none: plain cross-entropy.",
        choices=CLASS_WEIGHTS,
    ),
    Param(
        "balanced-sampler",
        bool,
        False,
        "Draw training batches with replacement so every class is seen equally often (imbalanced data).",
    ),
    Param("seed", int, 0, "Random seed for splits, init and shuffling."),
    Param("num-workers", int, -1, "DataLoader workers; -1 picks from the CPU count."),
    Param("amp", bool, True, "Mixed precision (bf16/fp16 autocast) on CUDA; ignored on CPU, where it is slower."),
    Param("debug-train-interval", int, 100, "smdebug: save losses every N training steps."),
    Param("debug-eval-interval", int, 10, "smdebug: save losses every N evaluation steps."),
    Param(
        "export-engines",
        bool,
        True,
        "After training, export ONNX and int8 inference engines next to model.pt, each kept only if it agrees with "
        "eager on the validation images (imgclf export); the serve images pick the fastest. Off: model.pt only.",
    ),
    Param(
        "debug-collections",
        str,
        "losses",
        "smdebug collections to save, comma-separated (losses, weights, gradients, biases, relu_input); weights and "
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
AUTO = "auto"  # a bool whose default is "auto" also takes "auto": decided from other settings (see its help)
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
            elif param.default == AUTO and str(text).lower() == AUTO:
                result = AUTO
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
        raise UserError(f"Hyperparameter '{param.name}' must be a {param.type.__name__}, got {value!r}.") from None
    if param.choices is not None and result not in param.choices:
        hint = difflib.get_close_matches(str(result), list(map(str, param.choices)), n=3)
        raise UserError(
            f"Hyperparameter '{param.name}' must be one of {describe_choices(param.choices)}; got {result!r}."
            + (f" Did you mean {' or '.join(hint)}?" if hint else "")
        )
    return result


def describe_choices(choices: tuple) -> str:
    """All choices, short enough for SageMaker's 1,024-character failure message: after the first three, names
    of one family are folded (`efficientnet_{b0,b1,...}`)."""
    names = list(map(str, choices))
    if len(", ".join(names)) <= 400:
        return ", ".join(names)
    head, families = names[:3], {}
    for name in names[3:]:
        stem = name[: name.rfind("_") + 1] if "_" in name else re.sub(r"\d+$", "", name)
        families.setdefault(stem, []).append(name[len(stem) :])
    folded = [
        stem + rest[0] if len(rest) == 1 else stem + "{" + ",".join(rest) + "}" for stem, rest in families.items()
    ]
    return ", ".join(head + folded)


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
            out[p.name] = json.dumps(v) if isinstance(v, bool) else str(v)
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
                raise UserError(f"Hyperparameter '{param.name}' is given twice: as '{seen[param.attr]}' and '{key}'.")
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
    if v["sample"] < 0 or (v["sample"] >= 1 and not float(v["sample"]).is_integer()):
        problems.append("sample must be 0 (all), a fraction below 1, or a whole number of images")
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


def given_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameter flags the user actually gave ({kebab name: value}); the rest keep their defaults."""
    return {p.name: getattr(args, p.attr) for p in SPEC if getattr(args, p.attr, None) is not None}


def from_arguments(args: argparse.Namespace) -> Hyperparameters:
    return Hyperparameters.from_mapping(given_arguments(args))


def tuning_ranges() -> dict[str, dict[str, Any]]:
    """SPEC's tuning ranges as plain data: the one mapping the local tuner, the SageMaker tuner and the README use.

    {"lr": {"type": "Continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
     "batch-size": {"type": "Categorical", "values": ["8", ...]}, "epochs": {"type": "Integer", ...}}
    `scaling` is SageMaker's ScalingType: Logarithmic where the spec says log, else Linear (never "Auto", which lets
    SageMaker pick a scale the local tuner would not use).
    """
    ranges: dict[str, dict[str, Any]] = {}
    for p in SPEC:
        t = p.tuning
        if isinstance(t, Continuous):
            scaling = "Logarithmic" if t.log else "Linear"
            ranges[p.name] = {"type": "Continuous", "min": t.low, "max": t.high, "scaling": scaling}
        elif isinstance(t, Integer):
            ranges[p.name] = {"type": "Integer", "min": t.low, "max": t.high, "scaling": "Linear"}
        elif isinstance(t, Categorical):
            ranges[p.name] = {"type": "Categorical", "values": [str(v) for v in t.values]}
    return ranges


def _range_text(r: dict[str, Any]) -> str:
    if r["type"] == "Categorical":
        return "{" + ", ".join(r["values"]) + "}"
    return f"{r['min']}–{r['max']}" + (" (log)" if r["scaling"] == "Logarithmic" else "")


def markdown_table() -> str:
    """The README's hyperparameter table (a unit test keeps README in step with SPEC)."""
    ranges = tuning_ranges()
    rows = ["| name | type | default | tuning range | meaning |", "|---|---|---|---|---|"]
    for p in SPEC:
        rng = _range_text(ranges[p.name]) if p.name in ranges else ""
        default = json.dumps(p.default) if isinstance(p.default, bool) else p.default
        names = " / ".join(f"`{n}`" for n in (p.name, *p.aliases))
        rows.append(f"| {names} | {p.type.__name__} | `{default}` | {rng} | {p.help} |")
    return "\n".join(rows)
