"""The training pipeline: train a VQ-VAE, then fit what the codec needs from it.

Training (vqkit.training) knows nothing of the codec; the codec builds on a trained run. This module
is the one place that runs the two in order, for the command line and for ``vqkit.train``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from vqkit import distributed as vdist
from vqkit.codec import carry_entropy_models, fit_static_model
from vqkit.config import RunConfig
from vqkit.data import ImageSet
from vqkit.models import VQVAE
from vqkit.runs import registry, run_lock
from vqkit.training import TrainResult
from vqkit.training import train as train_model

STATIC_FIT_IMAGES = 20_000  # training images whose codes fit the codec's static frequency table


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data: ImageSet | None = None,
    on_step: Callable[[int, VQVAE], None] | None = None,
) -> TrainResult:
    """Train a VQ-VAE into ``run_dir`` (see :func:`vqkit.training.train`); once training finishes,
    fit the codec's entropy models so that ``vqkit compress`` works on the fresh run, and record the
    run in the local registry (:mod:`vqkit.runs.registry`) so that files naming its model find it."""
    # Rank 0 writes the run folder and holds its lock from training to the codec's tables, so no
    # other writer slips in between (training takes the same lock again; it is reentrant).
    with run_lock(run_dir, "training") if vdist.is_main() else contextlib.nullcontext():
        result = train_model(cfg, run_dir, resume=resume, progress=progress, data=data, on_step=on_step)
        if vdist.is_main() and result.stopped == "finished":
            fit_entropy_models(result)
        if vdist.is_main():
            registry.register(result.run_dir)  # a stopped run has weights too; resuming re-registers it
    vdist.barrier()
    return result


def fit_entropy_models(result: TrainResult) -> list[Path]:
    """The codec's step after training. A decoder fine-tune keeps every code of the run it started
    from, so that run's static table and prior hold unchanged and are carried over; otherwise the
    static table is fitted on the code frequencies of (a deterministic part of) the training split.
    A plain autoencoder has no codes and gets nothing."""
    tc = result.config.train
    if not result.config.model.quantizer.enabled:
        return []
    if tc.trainable == "decoder":
        return carry_entropy_models(Path(str(tc.init_from)), result.run_dir)
    part = result.train_images[:STATIC_FIT_IMAGES].permute(0, 2, 3, 1).numpy()
    return [fit_static_model(result.run_dir, list(part), device=str(result.device))]
