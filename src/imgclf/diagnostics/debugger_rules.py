"""SageMaker Debugger's training rules, evaluated locally on smdebug output.

The built-in rule implementations are not published (smdebug-rulesconfig ships only their configs), so these are
written on smdebug's own `Rule` / `invoke_rule` API with the default parameters documented in the SageMaker
Developer Guide ("List of Debugger Built-in Rules"):

| rule                       | defaults                                                                        |
|----------------------------|---------------------------------------------------------------------------------|
| LossNotDecreasing          | num_steps=10, diff_percent=0 (any decrease), mode: EVAL, else TRAIN, else GLOBAL |
| VanishingGradient          | threshold=1e-7 (mean of absolute gradient values)                               |
| Overfit                    | start_step=0, patience=1, ratio_threshold=0.1                                   |
| Overtraining               | patience_train=5, patience_validation=10, delta=0.1                             |
| PoorWeightInitialization   | activation_inputs_regex=".*relu_input", threshold=10.0, distribution_range=0.001,|
|                            | patience=5, steps=10                                                            |

Where the guide leaves the mechanics open, the choices are these (and each finding says which numbers fired it):
- a "step" a rule counts is a step at which its tensors were saved (what a rule invoked by smdebug can see);
- one noisy batch never decides: LossNotDecreasing compares the mean of the losses saved since its previous check
  with the mean before it; validation losses are averaged over one evaluation pass (a run of consecutive EVAL steps);
- Overfit compares that pass mean with the mean training loss of the segment trained just before it;
- Overtraining fires when the training loss (patience_train saved steps) or the validation loss (patience_validation
  passes) has not improved on its best by more than `delta`;
- PoorWeightInitialization looks at the first `steps` training steps only: variance of activation inputs across
  layers (max/min > threshold), spread of the gradient distribution (5th-95th percentile of all gradients <
  distribution_range), and whether the loss fell at all within `patience` saved steps.

One module of ~500 lines on purpose: the five rules (~40 lines each) share the trial-reading helpers and the
`RuleResult` above them, and read as one table; `evaluate` and `losses_by_mode` are what the report calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from smdebug.core.modes import ModeKeys
from smdebug.exceptions import TensorUnavailableForStep
from smdebug.rules.rule import Rule
from smdebug.rules.rule_invoker import invoke_rule

from imgclf.diagnostics import DEBUGGER_RULES

DEFAULTS: dict[str, dict[str, Any]] = {
    "LossNotDecreasing": {"num_steps": 10, "diff_percent": 0.0, "mode": None},
    "VanishingGradient": {"threshold": 1e-7},
    "Overfit": {"start_step": 0, "patience": 1, "ratio_threshold": 0.1},
    "Overtraining": {"patience_train": 5, "patience_validation": 10, "delta": 0.1},
    "PoorWeightInitialization": {
        "activation_inputs_regex": ".*relu_input",
        "threshold": 10.0,
        "distribution_range": 0.001,
        "patience": 5,
        "steps": 10,
    },
}
# The names SageMaker's rule_configs use (imgclf.diagnostics.DEBUGGER_RULES) -> the rule classes' names.
SNAKE_NAMES = {snake: "".join(word.title() for word in snake.split("_")) for snake in DEBUGGER_RULES}


@dataclass
class Finding:
    step: int  # global step
    mode: str  # TRAIN / EVAL / GLOBAL
    mode_step: int
    why: str


@dataclass
class RuleResult:
    rule: str
    parameters: dict[str, Any]
    status: str = "no data"  # triggered | ok | no data
    findings: list[Finding] = field(default_factory=list)
    checks: int = 0  # steps at which the rule had the tensors it needs
    note: str = ""  # why there was no data, or what was checked

    @property
    def triggered(self) -> bool:
        return self.status == "triggered"

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "status": self.status,
            "triggered": self.triggered,
            "step": self.first.step if self.first else None,
            "why": self.first.why if self.first else self.note,
            "violations": len(self.findings),
            "checks": self.checks,
            "parameters": self.parameters,
            "findings": [f.__dict__ for f in self.findings[:50]],
        }


# ---- reading the trial -----------------------------------------------------------------------------------------


def loss_tensor_names(trial, tensor_regex: str | None = None, use_losses_collection: bool = True) -> list[str]:
    names: set[str] = set()
    if use_losses_collection and "losses" in {c for c in trial.collections()}:
        names.update(trial.tensor_names(collection="losses"))
    if tensor_regex:
        names.update(trial.tensor_names(regex=_regex_list(tensor_regex)))
    if not names:
        names.update(n for n in trial.tensor_names() if re.search(r"loss", n, re.IGNORECASE))
    return sorted(names)


def _regex_list(value: str | Iterable[str]) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def scalar(trial, name: str, step: int) -> float:
    return float(np.mean(trial.tensor(name).value(step)))


def loss_series(trial, name: str, mode: ModeKeys) -> list[tuple[int, int, float]]:
    """(global_step, mode_step, value) for every saved step of `mode`."""
    tensor = trial.tensor(name)
    out = []
    for mode_step in tensor.steps(mode=mode):
        g = trial.global_step(mode, mode_step)
        out.append((g, mode_step, float(np.mean(tensor.value(mode_step, mode=mode)))))
    return out


def eval_passes(series: list[tuple[int, int, float]]) -> list[list[tuple[int, int, float]]]:
    """Split saved EVAL steps into evaluation passes: a new pass starts when other steps ran in between
    (the global step moved further than the mode step)."""
    passes: list[list[tuple[int, int, float]]] = []
    for point in series:
        if passes and point[0] - passes[-1][-1][0] == point[1] - passes[-1][-1][1]:
            passes[-1].append(point)
        else:
            passes.append([point])
    return passes


# ---- the rules ---------------------------------------------------------------------------------------------------


class _LocalRule(Rule):
    """A Rule that keeps every violation (step, why) instead of only raising, so a report can show them."""

    name = ""

    def __init__(self, base_trial, **params: Any):
        super().__init__(base_trial, action_str="")
        self.result = RuleResult(self.name, {**DEFAULTS[self.name], **params})
        self.p = self.result.parameters

    def _mode(self, step: int) -> tuple[str, int]:
        mode, mode_step = self.base_trial.mode_modestep(step)
        return (mode.name if mode is not None else "GLOBAL"), (mode_step if mode_step is not None else step)

    def fire(self, step: int, why: str) -> bool:
        mode, mode_step = self._mode(step)
        self.result.findings.append(Finding(step, mode, mode_step, why))
        return True

    def steps_to_check(self) -> list[int]:
        return list(self.base_trial.steps())

    def finish(self) -> None:
        """Called once after the last step (training ended): close what was still open."""

    def evaluate(self) -> RuleResult:
        for step in self.steps_to_check():
            # smdebug's invoker: runs invoke_at_step, swallows missing tensors, records the condition.
            invoke_rule(self, start_step=step, end_step=step + 1, raise_eval_cond=False)
        self.finish()
        r = self.result
        if r.findings:
            r.status = "triggered"
        elif r.checks:
            r.status = "ok"
        return r


class _LossRule(_LocalRule):
    """Routes the primary loss to on_train(step, value) and closed EVAL passes to on_eval_pass(step, mean)."""

    def __init__(self, base_trial, tensor_regex: str | None = None, use_losses_collection: bool = True, **params):
        super().__init__(base_trial, **params)
        names = loss_tensor_names(base_trial, tensor_regex, use_losses_collection)
        self.loss = names[0] if names else None
        if self.loss is None:
            self.result.note = "no loss tensors saved (collection 'losses')"
        self._pass: list[tuple[int, int, float]] = []

    def steps_to_check(self) -> list[int]:
        if self.loss is None:
            return []
        return sorted(self.base_trial.tensor(self.loss).steps())

    def _close_pass(self) -> bool:
        if not self._pass:
            return False
        done, self._pass = self._pass, []
        return bool(self.on_eval_pass(done[-1][0], float(np.mean([v for _, _, v in done])), len(done)))

    def invoke_at_step(self, step):
        mode, mode_step = self.base_trial.mode_modestep(step)
        value = scalar(self.base_trial, self.loss, step)  # TensorUnavailableForStep -> skipped by the invoker
        fired = False
        if mode == ModeKeys.EVAL:
            last = self._pass[-1] if self._pass else None
            if last is not None and step - last[0] != mode_step - last[1]:
                fired |= self._close_pass()
            self._pass.append((step, mode_step, value))
        else:
            fired |= self._close_pass()
            if mode == ModeKeys.TRAIN or mode is None or mode == ModeKeys.GLOBAL:
                fired |= bool(self.on_train(step, value))
        return fired

    def finish(self) -> None:
        self._close_pass()

    def on_train(self, step: int, value: float) -> bool:
        return False

    def on_eval_pass(self, step: int, mean: float, count: int) -> bool:
        return False


class LossNotDecreasing(_LossRule):
    name = "LossNotDecreasing"

    def __init__(self, base_trial, **params):
        super().__init__(base_trial, **params)
        self.watch = None  # "EVAL" (pass means) or "TRAIN" (saved training losses)
        if self.loss is not None:
            wanted = (self.p["mode"] or "").upper()
            tensor = self.base_trial.tensor(self.loss)
            if wanted in ("", "EVAL") and len(eval_passes(loss_series(base_trial, self.loss, ModeKeys.EVAL))) >= 2:
                self.watch = "EVAL"
            elif wanted in ("", "TRAIN", "GLOBAL") and len(tensor.steps()) - len(tensor.steps(ModeKeys.EVAL)) >= 2:
                self.watch = "TRAIN"
            else:
                self.result.note = "fewer than 2 saved loss points (or evaluation passes) to compare"
        self._window: list[float] = []
        self._previous: float | None = None
        self._last_check: int | None = None

    def _observe(self, step: int, position: int, value: float) -> bool:
        self._window.append(value)
        if self._last_check is None:
            self._last_check, self._previous, self._window = position, float(np.mean(self._window)), []
            return False
        if position - self._last_check < self.p["num_steps"]:
            return False
        current, previous = float(np.mean(self._window)), self._previous
        self.result.checks += 1
        self._last_check, self._previous, self._window = position, current, []
        if not current < previous * (1 - float(self.p["diff_percent"]) / 100.0):
            what = "validation pass" if self.watch == "EVAL" else "training"
            return self.fire(
                step,
                f"{what} loss {current:.4g} vs {previous:.4g} at least {self.p['num_steps']} steps earlier: did not "
                "decrease" + (f" by {self.p['diff_percent']}%" if self.p["diff_percent"] else ""),
            )
        return False

    def on_train(self, step, value):
        return self.watch == "TRAIN" and self._observe(step, self.base_trial.mode_step(step), value)

    def on_eval_pass(self, step, mean, count):
        return self.watch == "EVAL" and self._observe(step, self.base_trial.mode_step(step), mean)


class VanishingGradient(_LocalRule):
    name = "VanishingGradient"

    def __init__(self, base_trial, **params):
        super().__init__(base_trial, **params)
        self.grads = _gradient_names(base_trial)
        if not self.grads:
            self.result.note = "no gradients saved (add 'gradients' to debug-collections)"

    def steps_to_check(self) -> list[int]:
        steps: set[int] = set()
        for name in self.grads:
            steps.update(self.base_trial.tensor(name).steps())
        return sorted(steps)

    def invoke_at_step(self, step):
        worst, seen = None, 0
        for name in self.grads:
            try:
                v = float(np.mean(np.abs(self.base_trial.tensor(name).value(step))))
            except TensorUnavailableForStep:
                continue
            seen += 1
            if v < self.p["threshold"] and (worst is None or v < worst[1]):
                worst = (name, v)
        if not seen:
            raise TensorUnavailableForStep("gradients", step)
        self.result.checks += 1
        if worst is not None:
            return self.fire(step, f"mean |{worst[0]}| = {worst[1]:.3g} < threshold {self.p['threshold']:g}")
        return False


class Overfit(_LossRule):
    name = "Overfit"

    def __init__(self, base_trial, **params):
        super().__init__(base_trial, **params)
        self._train: list[float] = []  # training losses since the previous evaluation pass
        self._last_train: list[float] = []
        self._exceeded = 0

    def on_train(self, step, value):
        self._train.append(value)
        return False

    def on_eval_pass(self, step, mean, count):
        if self._train:
            self._last_train, self._train = self._train, []
        if not self._last_train or step < self.p["start_step"]:
            return False
        train = float(np.mean(self._last_train))
        self.result.checks += 1
        ratio = (mean - train) / max(abs(train), 1e-12)
        if ratio > self.p["ratio_threshold"]:
            self._exceeded += 1
            if self._exceeded >= self.p["patience"]:
                return self.fire(
                    step,
                    f"validation loss {mean:.4g} vs training loss {train:.4g}: (valid-train)/train = {ratio:.2f} "
                    f"> {self.p['ratio_threshold']} for {self._exceeded} evaluation(s)",
                )
        else:
            self._exceeded = 0
        return False


class Overtraining(_LossRule):
    name = "Overtraining"

    def __init__(self, base_trial, **params):
        super().__init__(base_trial, **params)
        self._best = {"train": None, "valid": None}
        self._since = {"train": 0, "valid": 0}
        self._fired = {"train": False, "valid": False}

    def _observe(self, kind: str, step: int, value: float, patience: int) -> bool:
        self.result.checks += 1
        best = self._best[kind]
        if best is None or value < best - self.p["delta"]:
            self._best[kind], self._since[kind] = value, 0
            return False
        self._since[kind] += 1
        if self._since[kind] >= patience and not self._fired[kind]:
            self._fired[kind] = True
            label = "training" if kind == "train" else "validation"
            unit = "saved steps" if kind == "train" else "evaluations"
            return self.fire(
                step,
                f"{label} loss has not improved on its best {self._best[kind]:.4g} by more than delta "
                f"{self.p['delta']} for {self._since[kind]} {unit}: further training is wasted",
            )
        return False

    def on_train(self, step, value):
        return self._observe("train", step, value, self.p["patience_train"])

    def on_eval_pass(self, step, mean, count):
        return self._observe("valid", step, mean, self.p["patience_validation"])


class PoorWeightInitialization(_LocalRule):
    name = "PoorWeightInitialization"

    def __init__(self, base_trial, **params):
        super().__init__(base_trial, **params)
        self.activations = base_trial.tensor_names(regex=_regex_list(self.p["activation_inputs_regex"]))
        self.grads = _gradient_names(base_trial)
        names = loss_tensor_names(base_trial)
        self.loss = names[0] if names else None
        self._losses: list[float] = []
        self._loss_fired = False
        missing = []
        if not self.activations:
            missing.append(f"activation inputs ({self.p['activation_inputs_regex']})")
        if not self.grads:
            missing.append("gradients")
        self.result.note = ("not saved: " + ", ".join(missing)) if missing else ""

    def steps_to_check(self) -> list[int]:
        train = [
            self.base_trial.global_step(ModeKeys.TRAIN, s) for s in self.base_trial.steps(mode=ModeKeys.TRAIN)
        ] or list(self.base_trial.steps())
        return [g for g in sorted(train) if self._mode(g)[1] < self.p["steps"]]

    def _values(self, names: list[str], step: int) -> list[np.ndarray]:
        out = []
        for name in names:
            try:
                out.append(np.asarray(self.base_trial.tensor(name).value(step), dtype=np.float64))
            except TensorUnavailableForStep:
                pass
        return out

    def invoke_at_step(self, step):
        checked = False
        acts = [a for a in self._values(self.activations, step) if a.size > 1]
        if len(acts) >= 2:
            checked = True
            variances = [float(np.var(a)) for a in acts]
            low, high = min(variances), max(variances)
            ratio = high / max(low, 1e-30)
            if ratio > self.p["threshold"]:
                self.result.checks += 1
                return self.fire(
                    step,
                    f"activation-input variance differs {ratio:.3g}x across {len(acts)} layers "
                    f"(min {low:.3g}, max {high:.3g}; threshold {self.p['threshold']:g})",
                )
        grads = self._values(self.grads, step)
        if grads:
            checked = True
            flat = np.concatenate([g.ravel() for g in grads])
            p5, p95 = np.percentile(flat, [5, 95])
            if p95 - p5 < self.p["distribution_range"]:
                self.result.checks += 1
                return self.fire(
                    step,
                    f"gradient distribution too narrow: 95th-5th percentile {p95 - p5:.3g} < "
                    f"distribution_range {self.p['distribution_range']:g}",
                )
        if self.loss is not None and not self._loss_fired:
            try:
                self._losses.append(scalar(self.base_trial, self.loss, step))
                checked = True
            except TensorUnavailableForStep:
                pass
            if len(self._losses) > self.p["patience"] and min(self._losses[1:]) >= self._losses[0]:
                self._loss_fired = True
                self.result.checks += 1
                return self.fire(
                    step,
                    f"loss did not fall below its first value {self._losses[0]:.4g} in {len(self._losses) - 1} "
                    f"saved steps (patience {self.p['patience']})",
                )
        if not checked:
            raise TensorUnavailableForStep("activations/gradients/loss", step)
        self.result.checks += 1
        return False


def _gradient_names(trial) -> list[str]:
    names = set()
    if "gradients" in {c for c in trial.collections()}:
        names.update(trial.tensor_names(collection="gradients"))
    names.update(n for n in trial.tensor_names() if n.startswith("gradient/"))
    return sorted(names)


RULES: dict[str, type[_LocalRule]] = {
    cls.name: cls for cls in (LossNotDecreasing, VanishingGradient, Overfit, Overtraining, PoorWeightInitialization)
}


def evaluate(path: str, rules: Iterable[str] | None = None, parameters: dict[str, dict] | None = None) -> list:
    """Run the rules over the smdebug output at `path` (local dir or s3://); returns RuleResults in order."""
    import logging

    from smdebug.trials import create_trial

    logging.getLogger("smdebug").setLevel(logging.WARNING)
    trial = create_trial(str(path))
    names = list(rules) if rules else list(RULES)
    results = []
    for raw in names:
        name = SNAKE_NAMES.get(raw, raw)
        rule = RULES[name](trial, **(parameters or {}).get(name, {}))
        results.append(rule.evaluate())
    return results


def losses_by_mode(path_or_trial) -> dict[str, list[tuple[int, int, float]]]:
    """{'TRAIN': [(global_step, mode_step, loss)...], 'EVAL': [...]} of the primary loss, for plots."""
    trial = path_or_trial
    if isinstance(path_or_trial, str):
        from smdebug.trials import create_trial

        trial = create_trial(path_or_trial)
    names = loss_tensor_names(trial)
    if not names:
        return {}
    out = {}
    for mode in (ModeKeys.TRAIN, ModeKeys.EVAL, ModeKeys.GLOBAL):
        series = loss_series(trial, names[0], mode)
        if series and (mode != ModeKeys.GLOBAL or not out):
            out[mode.name] = series
    return out
