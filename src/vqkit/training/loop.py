"""The training loop: deterministic, resumable, time-budgeted, data-parallel under torchrun.

Determinism for resume: the epoch permutation is drawn from a generator seeded by (seed, epoch) and
the augmentation from one seeded by (seed, step), so batch ``s`` is a pure function of ``s``; the
global RNG (k-means, restarts), optimizer and codebook state are checkpointed. Resuming therefore
gives the same losses as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel

from vqkit import distributed as vdist
from vqkit import precision
from vqkit import runs as ckpt
from vqkit.config import ConfigError, RunConfig, to_dict
from vqkit.data import ImageSet, load_dataset, random_crop_flip, split_holdout, to_float
from vqkit.data.corruptions import parse_corruption
from vqkit.models import VQVAE
from vqkit.runs.results import read_result, write_result
from vqkit.training.evaluate import evaluate
from vqkit.training.fitting import (
    Cadence,
    TrainingDiverged,
    append_record,
    ddp_agree,
    resume_metrics,
    run_fit,
)
from vqkit.training.schedule import Horizon
from vqkit.visual import save_reconstruction_grid

FIXED_BATCH = 8  # images in the reconstruction picture saved with each checkpoint

__all__ = ["TrainResult", "TrainingDiverged", "prepare_data", "resolve_device", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    stopped: str  # "finished", "interrupted", or "already finished" (a finished run resumed: no-op)
    holdout: dict[str, Any]  # evaluation on the held-out split at the end (empty if none)
    config: RunConfig  # as trained (in_channels follows the data)
    device: torch.device
    train_images: torch.Tensor  # (N, C, S, S) uint8: the training split, for steps that follow


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


@dataclass
class TrainingData:
    train: torch.Tensor  # (N, C, H, W) uint8, kept in memory; augmentation happens per batch
    holdout: list[np.ndarray]  # (H, W, C) uint8 images for periodic evaluation
    channels: int
    class_names: tuple[str, ...] | None
    description: str = ""  # how the images become training crops, said at the start of a run


def prepare_data(cfg: RunConfig, data: ImageSet) -> TrainingData:
    """Cut the loaded images into equal training crops and split off a held-out part."""
    dc = cfg.data
    size = data.uniform_size
    s = dc.image_size
    if size is not None and min(size) >= dc.image_size:
        array = data.as_array()  # (N, H, W, C); random crops are taken per batch
        how = (
            f"{len(array)} images of {size[0]}x{size[1]}, a random {s}x{s} crop of each per batch"
            if size != (s, s)
            else f"{len(array)} images of {s}x{s}, used whole"
        )
    else:
        array = data.patches(dc.image_size)  # mixed sizes: tile into image_size crops
        kind = "mixed sizes" if size is None else f"{size[0]}x{size[1]}, smaller than {s}x{s}"
        how = f"{len(data.images)} images of {kind}, tiled into {len(array)} fixed {s}x{s} crops"
    if len(array) < 2:
        raise ValueError(f"{data.source}: need at least 2 training images, found {len(array)}")
    train_idx, hold_idx = split_holdout(len(array), dc.holdout, seed=cfg.train.seed)
    tensor = torch.from_numpy(np.ascontiguousarray(array[train_idx])).permute(0, 3, 1, 2)
    holdout = [array[i] for i in hold_idx]
    return TrainingData(tensor.contiguous(), holdout, data.channels, data.class_names, f"data: {how}")


def _steps_per_epoch(td: TrainingData, batch_size: int) -> int:
    return max(1, len(td.train) // min(batch_size, len(td.train)))


def _batch(data: torch.Tensor, cfg: RunConfig, step: int, steps_per_epoch: int) -> torch.Tensor:
    """The global batch of step ``step``: (B, C, S, S) float in [0, 1]; a pure function of step."""
    tc, dc = cfg.train, cfg.data
    epoch, pos = divmod(step, steps_per_epoch)
    gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)
    perm = torch.randperm(len(data), generator=gen)
    bs = min(tc.batch_size, len(data))
    x = to_float(data[perm[pos * bs : (pos + 1) * bs]].permute(0, 2, 3, 1))
    aug = torch.Generator().manual_seed(tc.seed * 7_919 + step)
    if x.shape[-1] != dc.image_size or x.shape[-2] != dc.image_size or dc.flip or dc.crop_pad:
        x = random_crop_flip(x, dc.image_size, aug, flip=dc.flip, pad=dc.crop_pad)
    return x


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data: ImageSet | None = None,
    on_step: Callable[[int, VQVAE], None] | None = None,
) -> TrainResult:
    """Train a VQ-VAE into ``run_dir``. Returns after the stopping criterion, or after Ctrl-C with a
    checkpoint saved. Raises TrainingDiverged on a NaN/inf loss (the last checkpoint is kept).
    ``on_step(step, model)`` is called after each optimizer step (hooks for tools and tests).

    The run folder's writer lock (vqkit.runs.run_lock) is held throughout, by the main process; a
    second writer gets RunError. SIGTERM saves and stops like Ctrl-C, on every rank at one step."""
    lock = ckpt.run_lock(run_dir, "training") if vdist.is_main() else nullcontext()
    with lock:
        return _train(cfg, Path(run_dir), resume=resume, progress=progress, data=data, on_step=on_step)


def _train(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    data: ImageSet | None,
    on_step: Callable[[int, VQVAE], None] | None,
) -> TrainResult:
    tc = cfg.train
    main = vdist.is_main()
    world = vdist.world_size()
    if tc.batch_size % world:
        raise ValueError(f"train.batch_size={tc.batch_size} must divide by the {world} processes")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    if device.type == "cuda" and vdist.is_distributed():
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(tc.seed)
    if cfg.data.corruption:
        parse_corruption(cfg.data.corruption)  # a malformed spec fails before the data loads

    if data is None:
        # A new run adapts to the data's channels (MNIST is grayscale); a resumed one keeps its own.
        channels = cfg.model.in_channels if resume else None
        data = load_dataset(cfg.data.spec, channels=channels, max_images=cfg.data.max_images, progress=main)
    if data.channels != cfg.model.in_channels:
        if resume or tc.init_from:
            raise ValueError(f"data has {data.channels} channels; the run expects {cfg.model.in_channels}")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, in_channels=data.channels))
    td = prepare_data(cfg, data)
    if main:
        print(td.description, file=sys.stderr)
    if cfg.data.eval_spec:
        ev_set = load_dataset(cfg.data.eval_spec, channels=cfg.model.in_channels)
        td.holdout = ev_set.images
    horizon = Horizon.from_config(tc, _steps_per_epoch(td, tc.batch_size))

    model = VQVAE(cfg.model).to(device)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
    if tc.init_from and not resume:
        model.load_state_dict(start_weights(cfg, run_dir).state_dict())
    frozen_codes = tc.trainable == "decoder"
    if frozen_codes:  # the encoder and codebook only compute codes; the optimizer never sees them
        model.encoder.requires_grad_(False)
        model.quantizer.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)

    step, elapsed = 0, 0.0
    metrics = run_dir / ckpt.layout.METRICS_FILE
    if resume:
        weights, state = ckpt.load_checkpoint(run_dir)
        model.load_state_dict(weights.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        if horizon.done(step, elapsed):
            # A finished run resumed: nothing to do, and nothing may be rewritten. Going on would
            # evaluate again, save the same weights and picture again, rewrite eval.json with a new
            # date, log a second final record, and (in the pipeline) refit the codec's static table.
            return TrainResult(run_dir, step, "already finished", _saved_eval(run_dir), cfg, device, td.train)
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if main:
            resume_metrics(metrics, step, state.get("metrics_bytes"))
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_config(run_dir, cfg, meta={"class_names": td.class_names, "channels": td.channels})
        metrics.write_text("")

    if tc.compile:
        model.encoder.compile()
        model.decoder.compile()
    net: torch.nn.Module = model
    if vdist.is_distributed():
        # Buffers (codebook, EMA statistics) are kept identical by the quantizer's own collectives.
        with warnings.catch_warnings():  # torch 2.13 deprecates the name, not the behaviour we need
            warnings.simplefilter("ignore", FutureWarning)
            net = DistributedDataParallel(model, broadcast_buffers=False)
    task = _VQVAETask(cfg, run_dir, model, net, optimizer, td, device)
    model.train()
    hook = None if on_step is None else (lambda s: on_step(s, model))
    outcome = run_fit(
        task,
        optimizer=optimizer,
        schedule=tc,
        horizon=horizon,
        cadence=Cadence(tc.log_every, tc.eval_every, tc.checkpoint_every, log_at_checkpoint=True),
        step=step,
        elapsed=elapsed,
        agree=ddp_agree(device) if vdist.is_distributed() else None,
        on_step=hook,
        progress=progress and main,
        desc="train",
    )
    step, elapsed = outcome.step, outcome.elapsed
    final = task.run_eval() if main else {}
    if main and final:
        append_record(metrics, {"type": "eval", "step": step, "elapsed_s": elapsed, **final})
    task.save(step, elapsed, final if outcome.stopped == "finished" else None)
    vdist.barrier()
    return TrainResult(run_dir, step, outcome.stopped, final, cfg, device, td.train)


def _saved_eval(run_dir: Path) -> dict[str, Any]:
    """The final holdout evaluation a finished run saved (eval.json), without its "data" tag; {} if
    it has none (no holdout)."""
    path = run_dir / ckpt.layout.EVAL_FILE
    if not path.is_file():
        return {}
    saved = read_result(path, "eval").data
    return {k: v for k, v in saved.items() if k != "data"}


class _VQVAETask:
    """The VQ-VAE's part of the fitting skeleton (vqkit.training.fitting.FitTask): its step, its
    metrics window (accumulated on the device; read only at log steps), evaluation and checkpoint."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        model: VQVAE,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        td: TrainingData,
        device: torch.device,
    ) -> None:
        self.cfg, self.run_dir, self.model, self.net = cfg, run_dir, model, net
        self.optimizer, self.td, self.device = optimizer, td, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.corrupt = parse_corruption(cfg.data.corruption) if cfg.data.corruption else None
        self.steps_per_epoch = _steps_per_epoch(td, cfg.train.batch_size)
        # On a GPU the uint8 training images (N, C, S, S) live on the card (CIFAR-10: 141 MB), so each
        # batch is gathered, converted and augmented there; the host only draws the random indices.
        self.train_images = td.train.to(device) if device.type == "cuda" else td.train
        self.fixed = td.holdout[:FIXED_BATCH] or [
            td.train[i].permute(1, 2, 0).numpy() for i in range(min(FIXED_BATCH, len(td.train)))
        ]
        self.main = vdist.is_main()
        self.frozen_codes = cfg.train.trainable == "decoder"
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.metrics = run_dir / ckpt.layout.METRICS_FILE
        k = model.codebook_size
        self.window_loss_sum = torch.zeros((), device=device)
        self.window_mse = torch.zeros((), device=device)
        self.window_counts = torch.zeros(model.quantizer.stages, k, device=device)  # (S, K) per stage
        self.window_steps = 0
        self.t_window = time.perf_counter()

    def step(self, step: int, lr: float) -> None:
        tc, world = self.cfg.train, vdist.world_size()
        x = _batch(self.train_images, self.cfg, step, self.steps_per_epoch)
        # Denoising: the network sees a corrupted copy and is scored against the clean batch.
        corrupt = self.corrupt
        noisy = corrupt(x, torch.Generator().manual_seed(tc.seed * 31_337 + step)) if corrupt else x
        x, noisy = (t.tensor_split(world)[vdist.rank()] for t in (x, noisy))
        # Contiguous shards: gathering them in rank order rebuilds the global batch exactly,
        # so k-means and restarts see the rows one process would see, in the same order.
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        noisy = noisy.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with precision.autocast(self.device, tc.precision):
            out = self.net(noisy, x, frozen_codes=self.frozen_codes)
        loss = out.losses["total"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        self.optimizer.step()
        # Accumulate on the device; the host reads these only at log steps (no per-step sync).
        self.window_loss_sum += loss.detach()
        self.window_mse += out.losses["reconstruction"].detach() / self.cfg.model.reconstruction_weight
        if self.model.quantizer.discrete:
            s, k = self.window_counts.shape
            # (B, h, w) or (B, S, h, w) -> stage-major, then one bincount over offset codes s * K + k
            per_stage = out.indices.reshape(out.indices.shape[0], s, -1).transpose(0, 1).reshape(s, -1)
            offset = per_stage + torch.arange(s, device=per_stage.device)[:, None] * k
            self.window_counts += torch.bincount(offset.reshape(-1), minlength=s * k).view(s, k)
        self.window_steps += 1

    def window_loss(self) -> float:
        return float(self.window_loss_sum) / self.window_steps

    def log(self, step: int, elapsed: float, lr: float, loss: float) -> dict[str, str]:
        mse = float(self.window_mse) / self.window_steps
        counts = vdist.all_reduce_sum(self.window_counts.clone())
        record = {
            "type": "train",
            "step": step,
            "epoch": step / self.steps_per_epoch,
            "elapsed_s": round(elapsed, 3),
            "lr": lr,
            "loss": loss,
            "mse": mse,
            "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
            "usage": float((counts > 0).float().mean()),  # the mean over stages of each one's usage
            "images_per_s": self.window_steps
            * self.cfg.train.batch_size
            / (time.perf_counter() - self.t_window),
            "restarts_total": int(self.model.quantizer.restarts_total),
        }
        if self.main:
            append_record(self.metrics, record)
        self.window_loss_sum.zero_()
        self.window_mse.zero_()
        self.window_counts.zero_()
        self.window_steps, self.t_window = 0, time.perf_counter()
        return {"loss": f"{loss:.4f}", "psnr": f"{record['psnr']:.2f}", "usage": f"{record['usage']:.2f}"}

    def run_eval(self) -> dict[str, Any]:
        if not self.td.holdout:
            return {}
        return evaluate(self.model, self.td.holdout[: self.cfg.train.eval_images], device=self.device,
                        with_ssim=False, corruption=self.corrupt)  # fmt: skip

    def evaluate(self, step: int, elapsed: float) -> str | None:
        line = None
        if self.main:
            ev = self.run_eval()
            if ev:
                append_record(self.metrics, {"type": "eval", "step": step, "elapsed_s": elapsed, **ev})
                line = f"step {step}: holdout psnr {ev['psnr']:.2f} dB"
                if self.model.quantizer.discrete:  # a plain autoencoder has no codebook to report
                    line += f", usage {ev['codebook_usage']:.3f}, perplexity {ev['perplexity']:.1f}"
        self.t_window = time.perf_counter()
        return line

    def save(self, step: int, elapsed: float, final_eval: dict[str, Any] | None = None) -> None:
        """Weights and training state (with the metrics file's length, so a resume drops what was
        logged after them) committed as one set; then the picture and, at the end, eval.json."""
        if not self.main:
            return
        state = {
            "step": step,
            "elapsed_s": elapsed,
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "metrics_bytes": self.metrics.stat().st_size,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        try:
            ckpt.save_checkpoint(self.run_dir, self.model, state)
            picture = self.run_dir / ckpt.layout.RECONSTRUCTIONS_FILE
            save_reconstruction_grid(self.model, self.fixed, picture, self.device)
            if final_eval is not None:
                write_result(self.run_dir, ckpt.layout.EVAL_FILE, "eval", {"data": "holdout", **final_eval})
        except (OSError, SafetensorError) as e:  # a full disk: one line; the last commit stands
            raise ckpt.RunError(
                f"could not save the checkpoint of step {step} in {self.run_dir} ({e}); the last "
                "complete checkpoint is kept and --resume continues from it"
            ) from e

    def diverged(self, loss: float, step: int, last_good_step: int) -> str:
        return (
            f"loss became {loss} before step {step}; training stopped. The last good checkpoint "
            f"(step {last_good_step}) is kept in {self.run_dir}. Try a lower train.lr or "
            "train.grad_clip."
        )


def start_weights(cfg: RunConfig, run_dir: Path) -> VQVAE:
    """The model of ``cfg.train.init_from``, checked to have exactly ``cfg``'s model section."""
    source = Path(str(cfg.train.init_from))
    if source.resolve() == run_dir.resolve():
        raise ckpt.RunError(
            f"train.init_from is this run's own folder {run_dir}; use --resume to continue it"
        )
    saved = ckpt.load_run_config(source).model
    if saved != cfg.model:
        theirs, ours = to_dict(saved), to_dict(cfg.model)
        keys = ", ".join(_differences(theirs, ours, "model."))
        raise ConfigError(
            f"train.init_from={source}: its model section differs at {keys}; "
            "a run that starts from its weights needs the same model"
        )
    return ckpt.load_model(source)


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts of the same shape."""
    out: list[str] = []
    for key in sorted(a):
        if isinstance(a[key], dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{prefix}{key}.")
        elif a[key] != b.get(key):
            out.append(prefix + key)
    return out


def override_for_resume(saved: RunConfig, **train_fields: Any) -> RunConfig:
    """The saved config with new stopping criteria (None values are left as saved)."""
    changes = {k: v for k, v in train_fields.items() if v is not None}
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, **changes))
