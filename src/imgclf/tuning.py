"""Local hyperparameter search over the same space the SageMaker HyperparameterTuner uses (`imgclf tune`).

The search space is read from `imgclf.hyperparameters.SPEC` (every Param with a `tuning` range); nothing is
declared here. Optuna runs it: TPE sampler, MedianPruner on the per-epoch validation metric (fit's `on_epoch`
raises optuna.TrialPruned), trials in parallel threads bounded by the CPU count, a SQLite study that resumes, and
one `feature_cache` dict shared by every trial, so with a frozen backbone (and augment off) the backbone runs once
per process and a trial only trains the head.

Trial 0 of a new study is the spec's defaults for the tuned parameters (enqueued), so the summary always says how
the best trial compares with the defaults under the same fixed settings.

Outputs in --out: hyperparameters.json (best, SageMaker form: every value a string), trials.csv, summary.md,
tune.png (objective by trial + parameter importance), study.db unless --study-db, model/ with --retrain-best.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from imgclf import hyperparameters as hpmod
from imgclf.channels import ChannelPaths
from imgclf.errors import UserError
from imgclf.hyperparameters import SPEC, Continuous, Integer, Param
from imgclf.metrics import OBJECTIVES

log = logging.getLogger(__name__)

STUDY_NAME = "imgclf"


# ---- the space, from SPEC ------------------------------------------------------------------------------------------


def tunable() -> list[Param]:
    return [p for p in SPEC if p.tuning is not None]


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in params:
        t = p.tuning
        if isinstance(t, Continuous):
            values[p.name] = trial.suggest_float(p.name, t.low, t.high, log=t.log)
        elif isinstance(t, Integer):
            values[p.name] = trial.suggest_int(p.name, t.low, t.high)
        else:
            values[p.name] = trial.suggest_categorical(p.name, list(t.values))
    return values


def search_space(tune: str | None, fixed: dict[str, Any]) -> list[Param]:
    """The parameters to search: every tunable one, or the comma-separated subset `tune` (flag names or
    canonical names); refused when a name has no range or is also among the `fixed` values."""
    params = tunable()
    if tune:
        wanted = {hpmod.canonical_name(n) for n in tune.split(",") if n.strip()}
        unknown = wanted - {p.name for p in params}
        if unknown:
            raise UserError(f"--tune: {', '.join(sorted(unknown))} has no tuning range; tunable: "
                            f"{', '.join(p.name for p in params)}.")  # fmt: skip
        params = [p for p in params if p.name in wanted]
    clash = sorted(set(fixed) & {p.name for p in params})
    if clash:
        raise UserError(
            f"{', '.join(clash)} is both fixed (--{clash[0]}) and tuned; drop the flag or leave it out of --tune."
        )
    return params


def retrain(
    channels: ChannelPaths, model_dir: Path, values: dict[str, Any], feature_cache: dict | None = None
) -> dict[str, Any]:
    """Train the final model with `values` on the channels (test included, when there is one) into `model_dir`."""
    from imgclf.training import RunConfig, fit

    return fit(
        hpmod.Hyperparameters.from_mapping(values),
        RunConfig(train_dir=channels.train, model_dir=model_dir, valid_dir=channels.valid, test_dir=channels.test),
        feature_cache=feature_cache,
    )


# ---- the search ----------------------------------------------------------------------------------------------------


class LocalTuner:
    def __init__(
        self,
        *,
        channels: ChannelPaths,
        out: Path,
        params: list[Param],
        fixed: dict[str, Any],
        objective: str = "valid_accuracy",
        storage: str | None = None,
        jobs: int = 1,
        sampler_seed: int = 0,
        pruning: bool = True,
        pruner: Any = None,
    ):
        self.pruner = pruner  # an optuna pruner instead of the default MedianPruner
        self.channels, self.out, self.params, self.fixed = channels, out, params, fixed
        self.objective, self.storage, self.jobs = objective, storage, jobs
        self.sampler_seed, self.pruning = sampler_seed, pruning
        self.feature_cache: dict = {}  # shared by every fit in this process
        self._cache_lock = threading.Lock()
        self._log = io.StringIO()

    def _study(self):
        import optuna

        pruner = self.pruner or (
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
            if self.pruning
            else optuna.pruners.NopPruner()
        )
        sampler = optuna.samplers.TPESampler(seed=self.sampler_seed, n_startup_trials=5, multivariate=True)
        study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=self.storage,
            load_if_exists=True,
            direction=OBJECTIVES[self.objective].lower(),
            sampler=sampler,
            pruner=pruner,
        )
        stored = study.user_attrs
        if stored and (stored.get("objective") != self.objective or stored.get("fixed") != self.fixed):
            raise UserError(
                f"The study in {self.storage} was run with objective {stored.get('objective')} and fixed "
                f"{stored.get('fixed')}; use another --study-db (or --out) for objective {self.objective} and "
                f"fixed {self.fixed}."
            )
        if not study.trials:
            study.set_user_attr("objective", self.objective)
            study.set_user_attr("fixed", self.fixed)
            defaults = {p.name: p.default for p in self.params}
            study.enqueue_trial(defaults, user_attrs={"baseline": True})
        return study

    def _hyperparameters(self, values: dict[str, Any]) -> hpmod.Hyperparameters:
        return hpmod.Hyperparameters.from_mapping({**self.fixed, **values})

    def objective_fn(self, trial) -> float:
        import optuna

        from imgclf.training import RunConfig, fit

        values = suggest(trial, self.params)
        hp = self._hyperparameters(values).replace(export_engines=False)  # the trial's model dir is thrown away

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            trial.report(float(metrics[self.objective]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.objective}={metrics[self.objective]:.4f}")

        model_dir = Path(tempfile.mkdtemp(prefix=f"imgclf-trial{trial.number}-"))
        t0 = time.perf_counter()
        try:
            cfg = RunConfig(
                train_dir=self.channels.train,
                model_dir=model_dir,
                valid_dir=self.channels.valid,
                test_dir=None,  # the test split stays unseen by the search
            )
            with self._first_fill():
                result = fit(hp, cfg, on_epoch=on_epoch, feature_cache=self.feature_cache)
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
            shutil.rmtree(model_dir, ignore_errors=True)
        trial.set_user_attr("best_epoch", result["best_epoch"])
        trial.set_user_attr("valid_loss", result["valid_loss"])
        trial.set_user_attr("valid_accuracy", result["valid_accuracy"])
        return float(result[self.objective])

    @contextlib.contextmanager
    def _first_fill(self):
        """The first trial fills the feature cache alone, so parallel trials do not all run the backbone."""
        if self.feature_cache or self.jobs == 1:
            yield
            return
        with self._cache_lock:
            yield

    def optimize(self, trials: int):
        import optuna
        import torch

        study = self._study()
        done = [t for t in study.trials if t.state.is_finished()]
        remaining = max(0, trials - len(done))
        if done:
            print(f"Resuming study {self.storage}: {len(done)} trial(s) done, {remaining} to run", flush=True)
        for t in study.trials:  # trials an interrupted run left RUNNING are lost: mark them failed
            if t.state == optuna.trial.TrialState.RUNNING:
                with contextlib.suppress(Exception):
                    study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if remaining == 0:
            return study
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // self.jobs))
        pkg_log = logging.getLogger("imgclf")
        level = pkg_log.level
        pkg_log.setLevel(logging.WARNING)  # per-trial INFO lines would drown the progress bar
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            # The trainer prints its metric lines on stdout; keep them in trials.log, not between progress bars.
            # Enqueued trials (the defaults baseline) run alone first: two of optuna's threads can pop the same
            # enqueued trial from an SQLite study, which then runs twice and counts as two, losing a trial.
            waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in study.trials)
            alone = min(waiting, remaining) if self.jobs > 1 else 0
            with open(self.out / "trials.log", "a") as sink, contextlib.redirect_stdout(sink):
                for n_trials, n_jobs in ((alone, 1), (remaining - alone, self.jobs)):
                    if n_trials:
                        study.optimize(
                            self.objective_fn,
                            n_trials=n_trials,
                            n_jobs=n_jobs,
                            show_progress_bar=True,
                            catch=(),
                            gc_after_trial=False,
                        )
        finally:
            torch.set_num_threads(threads)
            pkg_log.setLevel(level)
        return study

    # ---- results ----------------------------------------------------------------------------------------------

    def summarise(self, study, wall_s: float) -> dict[str, Any]:
        import optuna

        states = optuna.trial.TrialState
        finished = [t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED)]
        complete = [t for t in finished if t.state == states.COMPLETE]
        if not complete:
            raise UserError("No trial completed; see trials.log in the output directory.")
        best = study.best_trial
        baseline = next((t for t in complete if t.user_attrs.get("baseline")), None)
        best_values = {**self.fixed, **best.params}
        best_hp = self._hyperparameters(best.params)
        (self.out / "hyperparameters.json").write_text(json.dumps(best_hp.to_sagemaker(), indent=2) + "\n")
        names = [p.name for p in self.params]
        with open(self.out / "trials.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["trial", "state", *names, self.objective, "epochs_run", "seconds"])
            for t in study.trials:
                w.writerow(
                    [t.number, t.state.name, *(t.params.get(n) for n in names), t.value,
                     len(t.intermediate_values), t.user_attrs.get("seconds")]
                )  # fmt: skip
        importance: dict[str, float] = {}
        if len(complete) >= 3:
            try:
                importance = optuna.importance.get_param_importances(study)
            except Exception as exc:  # too few distinct values, a single point, ...
                log.info("parameter importance unavailable: %s", exc)
        plot = plot_study(study, importance, self.objective, self.out / "tune.png")
        seconds = [t.user_attrs.get("seconds", 0.0) for t in finished]
        rows = [("trial", "state", *names, self.objective, "epochs run", "seconds")]
        for t in study.trials:
            label = str(t.number) + ("*" if t.number == best.number else "")
            label += " (defaults)" if t.user_attrs.get("baseline") else ""
            rows.append(
                (label, t.state.name.lower(), *(_fmt(t.params.get(n)) for n in names), _fmt(t.value),
                 str(len(t.intermediate_values)), _fmt(t.user_attrs.get("seconds")))
            )  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
        lines = [
            "",
            table,
            "",
            f"{len(finished)} trials ({len(complete)} complete, {len(finished) - len(complete)} pruned) in "
            f"{wall_s:.1f} s wall this run; {sum(seconds) / max(len(seconds), 1):.1f} s per trial on average",
            f"best trial {best.number}: {self.objective} {best.value:.4f} with "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()),
        ]
        if baseline is not None:
            verdict = "matches" if baseline.number == best.number or best.value == baseline.value else "beats"
            lines.append(
                f"defaults (trial {baseline.number}): {self.objective} {baseline.value:.4f}; best {verdict} it"
            )
        if importance:
            lines.append("parameter importance: " + ", ".join(f"{k} {v:.2f}" for k, v in importance.items()))
        lines.append(
            f"SageMaker-ready hyperparameters: {self.out / 'hyperparameters.json'}; plot: {plot}; "
            f"table: {self.out / 'trials.csv'}"
        )
        text = "\n".join(lines)
        (self.out / "summary.md").write_text("```\n" + text.strip() + "\n```\n\n![tune](tune.png)\n")
        return {
            "text": text,
            "best_values": best_values,
            "best_value": best.value,
            "baseline_value": baseline.value if baseline else None,
            "importance": importance,
            "wall_s": wall_s,
            "seconds_per_trial": sum(seconds) / max(len(seconds), 1),
        }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot_study(study, importance: dict[str, float], objective: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    states = optuna.trial.TrialState
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100, gridspec_kw={"width_ratios": [2, 1]})
    complete = [t for t in study.trials if t.state == states.COMPLETE]
    pruned = [t for t in study.trials if t.state == states.PRUNED]
    ax1.plot([t.number for t in complete], [t.value for t in complete], "o", color="tab:blue", label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None for t in pruned]
        shown = [(t.number, v) for t, v in zip(pruned, last, strict=True) if v is not None]
        ax1.plot([n for n, _ in shown], [v for _, v in shown], "x", color="tab:gray", label="pruned (last reported)")
    best, running = [], None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    for t in sorted(complete, key=lambda t: t.number):
        running = t.value if running is None else (max(running, t.value) if maximize else min(running, t.value))
        best.append((t.number, running))
    if best:
        best.append((max(t.number for t in study.trials), best[-1][1]))
        ax1.step([n for n, _ in best], [v for _, v in best], where="post", color="tab:red", label="best so far")
    ax1.set_xlabel("trial")
    ax1.set_ylabel(objective)
    ax1.set_title("Objective by trial")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if importance:
        names = list(importance)[::-1]
        ax2.barh(names, [importance[n] for n in names], color="tab:green")
        ax2.set_xlim(0, 1)
        ax2.set_title("Parameter importance (fANOVA)")
    else:
        ax2.text(0.5, 0.5, "importance needs\n3+ complete trials", ha="center", va="center")
        ax2.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
