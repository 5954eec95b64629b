"""The prior's training loop on code grids already in memory: deterministic, resumable, time-budgeted.

Batch ``s`` is a pure function of (seed, s): the epoch permutation comes from a generator seeded by
(seed, epoch) and the label dropout from one seeded by (seed, s). The optimizer, step, elapsed time and
the global RNG are checkpointed, so resuming gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqkit import precision
from vqkit.priors.config import PriorTrainConfig
from vqkit.priors.data import CodeSet
from vqkit.priors.evaluate import grid_bits
from vqkit.priors.model import LOG2, CodePrior
from vqkit.training.loop import StopFlag, TrainingDiverged, graceful_interrupt, resolve_device
from vqkit.training.schedule import Horizon, learning_rate


@dataclass
class FitResult:
    prior: CodePrior
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
    prior: CodePrior,
    train: CodeSet,
    cfg: PriorTrainConfig,
    horizon: Horizon,
    *,
    val: CodeSet | None = None,
    state: dict[str, Any] | None = None,
    checkpoint: Callable[[CodePrior, dict[str, Any]], None] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], bool] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``prior`` (in place) on ``train``'s grids until ``horizon`` or Ctrl-C.

    ``state`` (from a checkpoint) resumes: optimizer, step, elapsed time, RNG. ``checkpoint(prior,
    state)`` is called every ``checkpoint_every`` steps and at the end; ``log(record)`` with each
    metrics record; ``on_step(step)`` after each step, returning True asks to stop (as Ctrl-C does)."""
    if len(train) == 0:
        raise ValueError("fit_prior needs at least one training grid")
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

    def current_state() -> dict[str, Any]:
        return {"step": step, "elapsed_s": elapsed, "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state()}  # fmt: skip

    def val_bits() -> float | None:
        if val is None or len(val) == 0:
            return None
        subset = val.spread(cfg.eval_grids)
        return float(grid_bits(prior, subset).mean()) / prior.config.length

    per_epoch = steps_per_epoch(len(train), cfg.batch_size)
    window_bits, window_steps, t_window = 0.0, 0, time.perf_counter()
    flag = StopFlag()
    bar = tqdm(total=horizon.max_steps, initial=step, disable=not progress, unit="step",
               dynamic_ncols=True, desc="prior")  # fmt: skip
    t_start = time.perf_counter() - elapsed
    stopped = "finished"
    prior.train()
    with graceful_interrupt(flag):
        while not horizon.done(step, elapsed):
            lr = learning_rate(cfg, step, horizon.progress(step, elapsed))
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = batch_rows(cfg, step, len(train))
            x = indices[rows].to(device)
            ids = start_ids(cfg, step, None if labels is None else labels[rows], len(rows), num_classes)
            with precision.autocast(device, cfg.precision):  # evaluation stays in float32
                logits = prior._forward(x, ids.to(device))  # (B, T, K)
            loss = F.cross_entropy(
                logits.float().reshape(-1, k), x.reshape(-1), label_smoothing=cfg.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            elapsed = time.perf_counter() - t_start
            window_bits += float(loss.detach()) / LOG2
            window_steps += 1
            bar.update(1)
            if on_step is not None and on_step(step):
                flag.requested = True
            if step % cfg.log_every == 0 or horizon.done(step, elapsed) or flag.requested:
                mean_bits = window_bits / window_steps
                if not math.isfinite(mean_bits):
                    bar.close()
                    raise TrainingDiverged(
                        f"prior loss became {mean_bits} before step {step}; try a lower train.lr"
                    )
                rate = window_steps * len(rows) / (time.perf_counter() - t_window)
                emit({"type": "train", "step": step, "epoch": step / per_epoch,
                      "elapsed_s": round(elapsed, 3), "lr": lr, "bits_per_code": mean_bits,
                      "grids_per_s": rate})  # fmt: skip
                bar.set_postfix(bits=f"{mean_bits:.3f}")
                window_bits, window_steps, t_window = 0.0, 0, time.perf_counter()
            if step % cfg.eval_every == 0:
                vb = val_bits()
                if vb is not None:
                    emit(
                        {
                            "type": "eval",
                            "step": step,
                            "elapsed_s": round(elapsed, 3),
                            "val_bits_per_code": vb,
                        }
                    )
                    bar.write(f"step {step}: validation {vb:.4f} bits/code")
                prior.train()
                t_window = time.perf_counter()
            if step % cfg.checkpoint_every == 0 and checkpoint is not None:
                checkpoint(prior, current_state())
            if flag.requested:
                stopped = "interrupted"
                break
    bar.close()
    final = val_bits()
    if final is not None and not (history and history[-1]["type"] == "eval" and history[-1]["step"] == step):
        emit({"type": "eval", "step": step, "elapsed_s": round(elapsed, 3), "val_bits_per_code": final})
    prior.eval()
    if checkpoint is not None:
        checkpoint(prior, current_state())
    return FitResult(prior, step, elapsed, stopped, final, history)
