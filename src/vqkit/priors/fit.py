"""The prior's training loop on code grids already in memory: deterministic, resumable, time-budgeted.

Batch ``s`` is a pure function of (seed, s): the epoch permutation comes from a generator seeded by
(seed, epoch) and the label dropout from one seeded by (seed, s). The optimizer, step, elapsed time and
the global RNG are checkpointed, so resuming gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vqkit import precision
from vqkit.priors.build import Prior
from vqkit.priors.config import PriorTrainConfig
from vqkit.priors.data import CodeSet
from vqkit.priors.evaluate import grid_bits
from vqkit.priors.grouped import GroupedPrior
from vqkit.priors.model import LOG2
from vqkit.training.fitting import Cadence, run_fit
from vqkit.training.loop import resolve_device
from vqkit.training.schedule import Horizon


@dataclass
class FitResult:
    prior: Prior
    step: int
    elapsed_s: float
    stopped: str  # "finished" or "interrupted"
    val_bits_per_code: float | None  # at the end, None without validation grids
    history: list[dict[str, Any]] = field(default_factory=list)  # the records passed to ``log``


def steps_per_epoch(num_grids: int, batch_size: int) -> int:
    return max(1, num_grids // min(batch_size, num_grids))


def batch_rows(cfg: PriorTrainConfig, step: int, num_grids: int) -> torch.Tensor:
    """Rows of the training set in batch ``step`` (a pure function of seed and step)."""
    epoch, pos = divmod(step, steps_per_epoch(num_grids, cfg.batch_size))
    perm = torch.randperm(num_grids, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    bs = min(cfg.batch_size, num_grids)
    return perm[pos * bs : (pos + 1) * bs]


def start_ids(
    cfg: PriorTrainConfig, step: int, labels: torch.Tensor | None, n: int, num_classes: int
) -> torch.Tensor:
    """Start-token ids of a batch: the labels, each replaced by the "no label" id with probability
    ``label_dropout``; all "no label" for an unconditional prior or unlabelled data."""
    if num_classes == 0 or labels is None:
        return torch.full((n,), num_classes, dtype=torch.long)
    drop = torch.rand(n, generator=torch.Generator().manual_seed(cfg.seed * 7_919 + step)) < cfg.label_dropout
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def fit_prior(
    prior: Prior,
    train: CodeSet,
    cfg: PriorTrainConfig,
    horizon: Horizon,
    *,
    val: CodeSet | None = None,
    state: dict[str, Any] | None = None,
    checkpoint: Callable[[Prior, dict[str, Any]], None] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], bool] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``prior`` (in place) on ``train``'s grids until ``horizon`` or Ctrl-C.

    ``state`` (from a checkpoint) resumes: optimizer, step, elapsed time, RNG. ``checkpoint(prior,
    state)`` is called every ``checkpoint_every`` steps and at the end; ``log(record)`` with each
    metrics record; ``on_step(step)`` after each step, returning True asks to stop (as Ctrl-C or
    SIGTERM does). The loop itself is vqkit.training.fitting's, which the VQ-VAE shares."""
    if len(train) == 0:
        raise ValueError("fit_prior needs at least one training grid")
    if isinstance(prior, GroupedPrior) and cfg.label_smoothing:
        raise ValueError("train.label_smoothing applies to serial priors only")
    if train.grid != prior.config.grid:
        raise ValueError(f"training grids are {train.grid}; the prior models {prior.config.grid}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    prior.to(device)
    k, num_classes = prior.config.codebook_size, prior.config.num_classes
    if int(train.indices.max()) >= k or int(train.indices.min()) < 0:
        raise ValueError(f"training indices must lie in [0, {k})")
    indices = torch.from_numpy(train.indices)
    labels = torch.from_numpy(train.labels) if train.labels is not None and num_classes else None
    if labels is not None and int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    optimizer = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        torch.set_rng_state(state["torch_rng"])
    else:
        torch.manual_seed(cfg.seed)

    history: list[dict[str, Any]] = []

    def emit(record: dict[str, Any]) -> None:
        history.append(record)
        if log is not None:
            log(record)

    task = _PriorTask(prior, cfg, indices, labels, val, optimizer, emit, checkpoint, len(train))
    prior.train()
    outcome = run_fit(
        task,
        optimizer=optimizer,
        schedule=cfg,
        horizon=horizon,
        cadence=Cadence(cfg.log_every, cfg.eval_every, cfg.checkpoint_every),
        step=step,
        elapsed=elapsed,
        on_step=on_step,
        progress=progress,
        desc="prior",
    )
    step, elapsed = outcome.step, outcome.elapsed
    final = task.val_bits()
    if final is not None and not (history and history[-1]["type"] == "eval" and history[-1]["step"] == step):
        emit({"type": "eval", "step": step, "elapsed_s": round(elapsed, 3), "val_bits_per_code": final})
    prior.eval()
    task.save(step, elapsed)
    return FitResult(prior, step, elapsed, outcome.stopped, final, history)


class _PriorTask:
    """The prior's part of the fitting skeleton (vqkit.training.fitting.FitTask)."""

    def __init__(
        self,
        prior: Prior,
        cfg: PriorTrainConfig,
        indices: torch.Tensor,
        labels: torch.Tensor | None,
        val: CodeSet | None,
        optimizer: torch.optim.Optimizer,
        emit: Callable[[dict[str, Any]], None],
        checkpoint: Callable[[Prior, dict[str, Any]], None] | None,
        num_grids: int,
    ) -> None:
        self.prior, self.cfg, self.indices, self.labels, self.val = prior, cfg, indices, labels, val
        self.optimizer, self.emit, self.checkpoint = optimizer, emit, checkpoint
        self.device = next(prior.parameters()).device
        self.num_grids = num_grids
        self.per_epoch = steps_per_epoch(num_grids, cfg.batch_size)
        self.window_bits, self.window_steps, self.rows = 0.0, 0, 0
        self.t_window = time.perf_counter()

    def step(self, step: int, lr: float) -> None:
        k, num_classes = self.prior.config.codebook_size, self.prior.config.num_classes
        rows = batch_rows(self.cfg, step, self.num_grids)
        x = self.indices[rows].to(self.device)
        labels = None if self.labels is None else self.labels[rows]
        ids = start_ids(self.cfg, step, labels, len(rows), num_classes)
        with precision.autocast(self.device, self.cfg.precision):  # evaluation stays in float32
            if isinstance(self.prior, GroupedPrior):  # its two-part head, teacher-forced
                loss = self.prior.training_nats(x, ids.to(self.device))
            else:
                logits = self.prior._forward(x, ids.to(self.device))  # (B, T, K)
                loss = F.cross_entropy(
                    logits.float().reshape(-1, k), x.reshape(-1), label_smoothing=self.cfg.label_smoothing
                )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.prior.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.window_bits += float(loss.detach()) / LOG2
        self.window_steps += 1
        self.rows = len(rows)

    def window_loss(self) -> float:
        return self.window_bits / self.window_steps

    def log(self, step: int, elapsed: float, lr: float, loss: float) -> dict[str, str]:
        rate = self.window_steps * self.rows / (time.perf_counter() - self.t_window)
        self.emit({"type": "train", "step": step, "epoch": step / self.per_epoch,
                   "elapsed_s": round(elapsed, 3), "lr": lr, "bits_per_code": loss,
                   "grids_per_s": rate})  # fmt: skip
        self.window_bits, self.window_steps, self.t_window = 0.0, 0, time.perf_counter()
        return {"bits": f"{loss:.3f}"}

    def val_bits(self) -> float | None:
        if self.val is None or len(self.val) == 0:
            return None
        subset = self.val.spread(self.cfg.eval_grids)
        return float(grid_bits(self.prior, subset).mean()) / self.prior.config.length

    def evaluate(self, step: int, elapsed: float) -> str | None:
        vb = self.val_bits()
        line = None
        if vb is not None:
            self.emit({"type": "eval", "step": step, "elapsed_s": round(elapsed, 3), "val_bits_per_code": vb})
            line = f"step {step}: validation {vb:.4f} bits/code"
        self.prior.train()
        self.t_window = time.perf_counter()
        return line

    def save(self, step: int, elapsed: float) -> None:
        if self.checkpoint is not None:
            state = {"step": step, "elapsed_s": elapsed, "optimizer": self.optimizer.state_dict(),
                     "torch_rng": torch.get_rng_state()}  # fmt: skip
            self.checkpoint(self.prior, state)

    def diverged(self, loss: float, step: int, last_good_step: int) -> str:
        return f"prior loss became {loss} before step {step}; try a lower train.lr"
