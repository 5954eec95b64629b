"""Learning-rate schedule and training progress.

Progress is the largest of the fractions done of each stopping criterion (steps, epochs, wall-clock
budget), so a time-budgeted run decays its learning rate to the end of its budget, whatever the
machine's speed. Cosine decay after a linear warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from vqkit.config import ConfigError, StopCriteria


@dataclass(frozen=True)
class Horizon:
    """When a run stops: any criterion reached ends it."""

    max_steps: int | None
    budget_s: float | None

    @classmethod
    def from_config(
        cls,
        cfg: StopCriteria,
        steps_per_epoch: int,
        hint: str = "--epochs N, --time-budget MIN or train.max_steps",
        what: str = "training",
    ) -> Horizon:
        """The horizon of a TrainConfig or a StopConfig (validated there: budgets finite and > 0,
        epochs >= 1); ``hint`` and ``what`` word the error when none is set."""
        steps: list[int] = []
        if cfg.max_steps is not None:
            steps.append(cfg.max_steps)
        if cfg.epochs is not None:
            steps.append(max(1, round(cfg.epochs * steps_per_epoch)))
        budget = cfg.time_budget_min * 60.0 if cfg.time_budget_min is not None else None
        if not steps and budget is None:
            raise ConfigError(f"{what} needs a stopping point: {hint}")
        return cls(max_steps=min(steps) if steps else None, budget_s=budget)

    def progress(self, step: int, elapsed_s: float) -> float:
        fractions = [0.0]
        if self.max_steps is not None:
            fractions.append(step / self.max_steps)
        if self.budget_s is not None:
            fractions.append(elapsed_s / self.budget_s)
        return max(fractions)

    def done(self, step: int, elapsed_s: float) -> bool:
        return self.progress(step, elapsed_s) >= 1.0


class ScheduleConfig(Protocol):
    """What the schedule reads: the VQ-VAE's TrainConfig and the prior's PriorTrainConfig both fit."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def min_lr_ratio(self) -> float: ...


def learning_rate(cfg: ScheduleConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from lr down to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
