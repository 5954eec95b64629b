"""The fitting skeleton the VQ-VAE and the prior share: when to stop, the learning-rate schedule, the
log / evaluation / checkpoint cadence, stopping on SIGINT or SIGTERM with a checkpoint, the NaN guard,
and (for data-parallel training) the ranks' agreement on the clock and on stopping.

Each model supplies a :class:`FitTask`: its optimizer step, its metrics window and record, its
evaluation and its checkpoint. :func:`run_fit` drives it from ``step`` until the horizon or a stop
request, and leaves the final evaluation and checkpoint to the caller.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
from tqdm import tqdm

from vqkit import distributed as vdist
from vqkit.runs import RunError, write_text
from vqkit.training.schedule import Horizon, ScheduleConfig, learning_rate

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; timeout, schedulers, torchrun's teardown


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopFlag:
    """The first SIGINT or SIGTERM asks the loop to stop after the current step and save; a second
    one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
        tqdm.write(f"{name}: finishing this step, saving a checkpoint (send it again to abort)")


@contextmanager
def graceful_interrupt(flag: StopFlag) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``flag`` inside the block (main thread only; elsewhere signals
    behave as usual)."""
    try:
        previous = {s: signal.signal(s, flag.handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ddp_agree(device: torch.device) -> Callable[[float, bool], tuple[float, bool]]:
    """(rank 0's clock, whether any rank was asked to stop), the same on every rank: time-based
    schedules and stops agree, and a signal that reaches one process stops all of them at the same
    step (a rank leaving the loop alone would leave the others waiting in a collective). One
    all-reduce per step: rank 0 adds its clock, every rank its stop request."""

    def agree(local_elapsed: float, stop_requested: bool) -> tuple[float, bool]:
        first = vdist.rank() == 0
        t = torch.tensor(
            [local_elapsed if first else 0.0, float(stop_requested)], dtype=torch.float64, device=device
        )
        vdist.all_reduce_sum(t)
        return float(t[0]), bool(t[1] > 0)

    return agree


@dataclass(frozen=True)
class Cadence:
    log_every: int
    eval_every: int
    checkpoint_every: int
    # Close the metrics window at checkpoint steps too (the VQ-VAE does: its record then checks the
    # loss before the checkpoint is written). Either way a checkpoint step checks the loss first.
    log_at_checkpoint: bool = False


class FitTask(Protocol):
    """What one model supplies to :func:`run_fit`."""

    def step(self, step: int, lr: float) -> None:
        """One optimizer step on batch ``step`` (the lr is already set), adding to the window."""

    def window_loss(self) -> float:
        """Mean training loss since the window was last logged."""

    def log(self, step: int, elapsed: float, lr: float, loss: float) -> dict[str, str]:
        """Write the window's record and start a new window; returns the progress-bar postfix."""

    def evaluate(self, step: int, elapsed: float) -> str | None:
        """The periodic held-out evaluation; returns a line for the progress bar, or None."""

    def save(self, step: int, elapsed: float) -> None:
        """Write a checkpoint of ``step``."""

    def diverged(self, loss: float, step: int, last_good_step: int) -> str:
        """The message of TrainingDiverged."""


@dataclass
class FitOutcome:
    step: int
    elapsed: float
    stopped: str  # "finished" or "interrupted"


def run_fit(
    task: FitTask,
    *,
    optimizer: torch.optim.Optimizer,
    schedule: ScheduleConfig,
    horizon: Horizon,
    cadence: Cadence,
    step: int = 0,
    elapsed: float = 0.0,
    agree: Callable[[float, bool], tuple[float, bool]] | None = None,
    on_step: Callable[[int], bool | None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitOutcome:
    """Step ``task`` from ``step`` (``elapsed`` seconds in) until ``horizon`` or a stop request.

    ``agree`` (several processes, e.g. :func:`ddp_agree`) makes the clock and the stop decision
    common to all of them; ``on_step(step)`` runs after each step and may return True to stop (as a
    signal does). Raises TrainingDiverged when the loss of a window is NaN or infinite."""
    flag = StopFlag()
    bar = tqdm(total=horizon.max_steps, initial=step, disable=not progress, unit="step",
               dynamic_ncols=True, desc=desc)  # fmt: skip
    t_start = time.perf_counter() - elapsed
    last_good_step = step
    stopped = "finished"
    try:
        with graceful_interrupt(flag):
            while not horizon.done(step, elapsed):
                lr = learning_rate(schedule, step, horizon.progress(step, elapsed))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                task.step(step, lr)
                step += 1
                local = time.perf_counter() - t_start
                elapsed, agreed_stop = agree(local, flag.requested) if agree else (local, False)
                bar.update(1)
                if on_step is not None and on_step(step):
                    flag.requested = True
                # One process reads its flag now; several act on the request they agreed on above.
                stop = agreed_stop if agree else flag.requested
                log_now = step % cadence.log_every == 0 or horizon.done(step, elapsed) or stop
                ckpt_now = step % cadence.checkpoint_every == 0
                if log_now or ckpt_now:
                    loss = task.window_loss()
                    if not math.isfinite(loss):  # never log it, never checkpoint it
                        raise TrainingDiverged(task.diverged(loss, step, last_good_step))
                    if log_now or cadence.log_at_checkpoint:
                        bar.set_postfix(task.log(step, elapsed, lr, loss))
                if step % cadence.eval_every == 0:
                    line = task.evaluate(step, elapsed)
                    if line:
                        bar.write(line)
                if ckpt_now:
                    task.save(step, elapsed)
                    last_good_step = step
                if stop:
                    stopped = "interrupted"
                    break
    finally:
        bar.close()
    return FitOutcome(step, elapsed, stopped)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line at the end of a metrics file, in one write. RunError when it cannot be written
    (a full disk): the last checkpoint stands, and a resume drops a line cut off here."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise RunError(
            f"could not write {path} ({e}); the last checkpoint is kept and --resume continues from it"
        ) from e


def resume_metrics(path: Path, step: int, size: int | None = None) -> None:
    """Cut a metrics file back to its checkpoint of ``step``: to ``size`` bytes (the length the
    checkpoint recorded; older checkpoints have none), and to records of steps <= ``step``. A line
    that is not JSON (the last one, cut off by a crash or a full disk) is dropped with a warning."""
    if not path.exists():
        return
    keep, torn, offset = [], [], 0
    for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        offset += len(raw)
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            record = json.loads(line)
            step_of = int(record["step"])
        except (ValueError, KeyError, TypeError):
            torn.append(number)
            continue
        if step_of <= step and (size is None or offset <= size):
            keep.append(line)
    if torn:
        lines = ", ".join(map(str, torn))
        print(f"vqkit: warning: {path}: dropped line {lines}, which is not a whole record (cut off when "
              "the run stopped)", file=sys.stderr)  # fmt: skip
    write_text(path, "".join(ln + "\n" for ln in keep))
