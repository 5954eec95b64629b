"""The training loop: deterministic, resumable, time-budgeted, data-parallel under torchrun.

Determinism for resume: the epoch permutation is drawn from a generator seeded by (seed, epoch) and
the augmentation from one seeded by (seed, step), so batch ``s`` is a pure function of ``s``; the
global RNG (k-means, restarts), optimizer and codebook state are checkpointed. Resuming therefore
gives the same losses as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vqkit import distributed as vdist
from vqkit import precision
from vqkit import runs as ckpt
from vqkit.config import ConfigError, RunConfig, to_dict
from vqkit.data import ImageSet, load_dataset, random_crop_flip, split_holdout, to_float
from vqkit.data.corruptions import parse_corruption
from vqkit.models import VQVAE
from vqkit.training.evaluate import evaluate
from vqkit.training.schedule import Horizon, learning_rate
from vqkit.visual import save_reconstruction_grid

FIXED_BATCH = 8  # images in the reconstruction picture saved with each checkpoint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    stopped: str  # "finished" or "interrupted"
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


def prepare_data(cfg: RunConfig, data: ImageSet) -> TrainingData:
    """Cut the loaded images into equal training crops and split off a held-out part."""
    dc = cfg.data
    size = data.uniform_size
    if size is not None and min(size) >= dc.image_size:
        array = data.as_array()  # (N, H, W, C); random crops are taken per batch
    else:
        array = data.patches(dc.image_size)  # mixed sizes: tile into image_size crops
    if len(array) < 2:
        raise ValueError(f"{data.source}: need at least 2 training images, found {len(array)}")
    train_idx, hold_idx = split_holdout(len(array), dc.holdout, seed=cfg.train.seed)
    tensor = torch.from_numpy(np.ascontiguousarray(array[train_idx])).permute(0, 3, 1, 2)
    holdout = [array[i] for i in hold_idx]
    return TrainingData(tensor.contiguous(), holdout, data.channels, data.class_names)


class StopFlag:
    """First Ctrl-C asks the loop to stop after the current step and save; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("interrupt: finishing this step, saving a checkpoint (Ctrl-C again to abort)")


@contextmanager
def graceful_interrupt(flag: StopFlag) -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, flag.handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


def _agree(local_elapsed: float, stop_requested: bool, device: torch.device) -> tuple[float, bool]:
    """(rank 0's clock, whether any rank was asked to stop), the same on every rank: time-based
    schedules and stops agree, and a Ctrl-C that reaches one process stops all of them at the same
    step (a rank leaving the loop alone would leave the others waiting in a collective). One
    all-reduce per step: rank 0 adds its clock, every rank its stop request."""
    if not vdist.is_distributed():
        return local_elapsed, stop_requested
    first = vdist.rank() == 0
    t = torch.tensor(
        [local_elapsed if first else 0.0, float(stop_requested)], dtype=torch.float64, device=device
    )
    vdist.all_reduce_sum(t)
    return float(t[0]), bool(t[1] > 0)


def _append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / ckpt.layout.METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume drop records written after the checkpoint (a crash may have left some)."""
    path = run_dir / ckpt.layout.METRICS_FILE
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    ckpt.write_text(path, "".join(ln + "\n" for ln in keep))


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
    ``on_step(step, model)`` is called after each optimizer step (hooks for tools and tests)."""
    run_dir = Path(run_dir)
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
    corrupt = parse_corruption(cfg.data.corruption) if cfg.data.corruption else None

    if data is None:
        # A new run adapts to the data's channels (MNIST is grayscale); a resumed one keeps its own.
        channels = cfg.model.in_channels if resume else None
        data = load_dataset(cfg.data.spec, channels=channels, max_images=cfg.data.max_images, progress=main)
    if data.channels != cfg.model.in_channels:
        if resume or tc.init_from:
            raise ValueError(f"data has {data.channels} channels; the run expects {cfg.model.in_channels}")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, in_channels=data.channels))
    td = prepare_data(cfg, data)
    if cfg.data.eval_spec:
        ev_set = load_dataset(cfg.data.eval_spec, channels=cfg.model.in_channels)
        td.holdout = ev_set.images
    steps_per_epoch = max(1, len(td.train) // min(tc.batch_size, len(td.train)))
    horizon = Horizon.from_config(tc, steps_per_epoch)

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
    if resume:
        state = ckpt.load_train_state(run_dir)
        weights = ckpt.load_model(run_dir)
        model.load_state_dict(weights.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if main:
            _truncate_metrics(run_dir, step)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_config(run_dir, cfg, meta={"class_names": td.class_names, "channels": td.channels})
        (run_dir / ckpt.layout.METRICS_FILE).write_text("")

    if tc.compile:
        model.encoder.compile()
        model.decoder.compile()
    net: torch.nn.Module = model
    if vdist.is_distributed():
        # Buffers (codebook, EMA statistics) are kept identical by the quantizer's own collectives.
        with warnings.catch_warnings():  # torch 2.13 deprecates the name, not the behaviour we need
            warnings.simplefilter("ignore", FutureWarning)
            net = DistributedDataParallel(model, broadcast_buffers=False)
    fixed = td.holdout[:FIXED_BATCH] or [
        td.train[i].permute(1, 2, 0).numpy() for i in range(min(FIXED_BATCH, len(td.train)))
    ]
    # On a GPU the uint8 training images (N, C, S, S) live on the card (CIFAR-10: 141 MB), so each
    # batch is gathered, converted and augmented there; the host only draws the random indices.
    train_images = td.train.to(device) if device.type == "cuda" else td.train

    def save(final_eval: dict[str, Any] | None = None) -> None:
        if not main:
            return
        ckpt.save_model(run_dir, model)
        state = {
            "step": step,
            "elapsed_s": elapsed,
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        ckpt.save_train_state(run_dir, state)
        save_reconstruction_grid(model, fixed, run_dir / ckpt.layout.RECONSTRUCTIONS_FILE, device)
        if final_eval is not None:
            ckpt.write_json(run_dir / ckpt.layout.EVAL_FILE, {"data": "holdout", **final_eval})

    def run_eval() -> dict[str, Any]:
        if not td.holdout:
            return {}
        return evaluate(
            model, td.holdout[: tc.eval_images], device=device, with_ssim=False, corruption=corrupt
        )

    k = model.codebook_size
    window_loss = torch.zeros((), device=device)
    window_mse = torch.zeros((), device=device)
    window_counts = torch.zeros(k, device=device)
    window_steps, last_good_step = 0, step
    flag = StopFlag()
    bar = tqdm(
        total=horizon.max_steps, initial=step, disable=not (progress and main), unit="step",
        dynamic_ncols=True, desc="train",
    )  # fmt: skip
    t_start = time.perf_counter() - elapsed
    t_window = time.perf_counter()
    stopped = "finished"
    model.train()
    with graceful_interrupt(flag):
        while not horizon.done(step, elapsed):
            lr = learning_rate(tc, step, horizon.progress(step, elapsed))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = _batch(train_images, cfg, step, steps_per_epoch)
            # Denoising: the network sees a corrupted copy and is scored against the clean batch.
            noisy = corrupt(x, torch.Generator().manual_seed(tc.seed * 31_337 + step)) if corrupt else x
            x, noisy = (t.tensor_split(world)[vdist.rank()] for t in (x, noisy))
            # Contiguous shards: gathering them in rank order rebuilds the global batch exactly,
            # so k-means and restarts see the rows one process would see, in the same order.
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            noisy = noisy.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with precision.autocast(device, tc.precision):
                out = net(noisy, x, frozen_codes=frozen_codes)
            loss = out.losses["total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            step += 1
            elapsed, agreed_stop = _agree(time.perf_counter() - t_start, flag.requested, device)
            # Accumulate on the device; the host reads these only at log steps (no per-step sync).
            window_loss += loss.detach()
            window_mse += out.losses["reconstruction"].detach() / cfg.model.reconstruction_weight
            if cfg.model.quantizer.enabled:
                window_counts += torch.bincount(out.indices.reshape(-1), minlength=k)
            window_steps += 1
            bar.update(1)
            if on_step is not None:
                on_step(step, model)
            # One process reads its flag now; several act on the request they agreed on above.
            stop = agreed_stop if vdist.is_distributed() else flag.requested
            log_now = step % tc.log_every == 0 or horizon.done(step, elapsed) or stop
            ckpt_now = step % tc.checkpoint_every == 0
            if log_now or ckpt_now:
                mean_loss = float(window_loss) / window_steps
                if not math.isfinite(mean_loss):
                    bar.close()
                    raise TrainingDiverged(
                        f"loss became {mean_loss} before step {step}; training stopped. The last "
                        f"good checkpoint (step {last_good_step}) is kept in {run_dir}. Try a "
                        "lower train.lr or train.grad_clip."
                    )
                mse = float(window_mse) / window_steps
                counts = vdist.all_reduce_sum(window_counts.clone())
                record = {
                    "type": "train",
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "elapsed_s": round(elapsed, 3),
                    "lr": lr,
                    "loss": mean_loss,
                    "mse": mse,
                    "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
                    "usage": float((counts > 0).float().mean()),
                    "images_per_s": window_steps * tc.batch_size / (time.perf_counter() - t_window),
                    "restarts_total": int(model.quantizer.restarts_total),
                }
                if main:
                    _append_metrics(run_dir, record)
                bar.set_postfix(
                    loss=f"{mean_loss:.4f}",
                    psnr=f"{record['psnr']:.2f}",
                    usage=f"{record['usage']:.2f}",
                )
                window_loss.zero_()
                window_mse.zero_()
                window_counts.zero_()
                window_steps, t_window = 0, time.perf_counter()
            if step % tc.eval_every == 0 and main:
                ev = run_eval()
                if ev:
                    _append_metrics(run_dir, {"type": "eval", "step": step, "elapsed_s": elapsed, **ev})
                    line = f"step {step}: holdout psnr {ev['psnr']:.2f} dB"
                    if cfg.model.quantizer.enabled:  # a plain autoencoder has no codebook to report
                        line += f", usage {ev['codebook_usage']:.3f}, perplexity {ev['perplexity']:.1f}"
                    bar.write(line)
                t_window = time.perf_counter()
            if ckpt_now:
                save()
                last_good_step = step
            if stop:
                stopped = "interrupted"
                break
    bar.close()
    final = run_eval() if main else {}
    if main and final:
        _append_metrics(run_dir, {"type": "eval", "step": step, "elapsed_s": elapsed, **final})
    save(final if stopped == "finished" else None)
    vdist.barrier()
    return TrainResult(run_dir, step, stopped, final, cfg, device, td.train)


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
