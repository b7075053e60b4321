"""Early stopping on valid_loss: the best epoch so far, its weights and report, and the epochs since it improved."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import Any

from torch import nn


@dataclass
class BestSoFar:
    valid_loss: float = math.inf
    epoch: int = 0  # 0: no epoch yet
    bad_epochs: int = 0  # epochs since valid_loss last improved
    valid_accuracy: float = 0.0
    valid_report: dict[str, Any] | None = None
    state: dict[str, Any] | None = None  # the best epoch's model state_dict

    def update(self, epoch: int, valid_loss: float, valid_report: dict[str, Any], model: nn.Module) -> None:
        """Keep this epoch if valid_loss improved, else count one more epoch without improvement."""
        if valid_loss < self.valid_loss:
            self.valid_loss, self.epoch, self.bad_epochs = valid_loss, epoch, 0
            self.valid_accuracy, self.valid_report = valid_report["accuracy"], valid_report
            self.state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1

    def stopped(self, patience: int) -> bool:
        """`patience` epochs without improvement (0: never stop early)."""
        return self.bad_epochs >= patience > 0

    def to_checkpoint(self) -> dict[str, Any]:
        """The plain dict a checkpoint holds under "best" (the same keys as before this class existed)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> BestSoFar:
        """From `to_checkpoint`'s dict, or the dict older checkpoints hold (no valid_accuracy before an improvement)."""
        return cls(**saved)
