"""SageMaker Debugger (smdebug) hook: from debughookconfig.json on SageMaker, or `--debugger-out` locally.

Only losses are saved by default (train every 100 steps, eval every 10, like the seeds): weights and gradients
every step cost 4-5x step time and ~90 MB a step, so they are opt-in (`debug-collections`).
Without a config and without `--debugger-out` there is no hook and smdebug is never imported.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from torch import nn

from imgclf.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)


class Debugger:
    """A thin wrapper so the training loop reads the same with the hook on or off."""

    def __init__(self, hook: Any | None):
        self.hook = hook

    def register(self, module: nn.Module, loss: nn.Module) -> None:
        if self.hook is not None:
            self.hook.register_module(module)
            self.hook.register_loss(loss)

    def mode(self, name: str):
        """name: 'train' | 'eval' | 'predict' (smdebug modes.TRAIN / EVAL / PREDICT)."""
        if self.hook is not None:
            from smdebug.pytorch import modes

            self.hook.set_mode({"train": modes.TRAIN, "eval": modes.EVAL, "predict": modes.PREDICT}[name])
        return nullcontext()

    def close(self) -> None:
        if self.hook is not None:
            self.hook.close()


def create(hp: Hyperparameters, config_file: Path | None, out_dir: Path | None) -> Debugger:
    """SageMaker's config file wins (it names the S3-synced output path); then a local out dir; else off."""
    if config_file is not None and config_file.is_file():
        from smdebug.pytorch import Hook

        log.info("smdebug hook from %s", config_file)
        return Debugger(Hook.create_from_json_file(str(config_file)))
    if out_dir is None:
        return Debugger(None)
    from smdebug.pytorch import Hook, SaveConfig, SaveConfigMode, modes

    collections = [c.strip() for c in hp.debug_collections.split(",") if c.strip()]
    save_config = SaveConfig(
        mode_save_configs={
            modes.TRAIN: SaveConfigMode(save_interval=hp.debug_train_interval),
            modes.EVAL: SaveConfigMode(save_interval=hp.debug_eval_interval),
            modes.PREDICT: SaveConfigMode(save_interval=hp.debug_eval_interval),
        }
    )
    log.info("smdebug hook writing %s to %s", ",".join(collections), out_dir)
    hook = Hook(out_dir=str(out_dir), save_config=save_config, include_collections=collections)
    if "relu_input" in collections:
        # Not a built-in collection: poor_weight_initialization reads the inputs of the ReLU layers.
        hook.get_collection("relu_input").include(".*relu_input")
    return Debugger(hook)
