"""vqkit train: train a VQ-VAE into a run folder; ``--resume`` continues one."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vqkit import distributed as vdist
from vqkit.cli.common import INTERRUPTED, add_device, parser, run_ref, setting_given
from vqkit.config import ConfigError, RunConfig, apply_overrides, load_config, recipe_path
from vqkit.pipeline import train
from vqkit.runs import RunError, layout, load_run_config
from vqkit.training.loop import override_for_resume


def _init_distributed(device: str) -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


NO_DATA = (
    "no training data: pass --data DIR (a folder of images, CIFAR-10/MNIST folder, .npz) or --data builtin "
    "for the built-in photo crops (or set data.spec in the --config file)"
)


def names_data(config: Path | None, overrides: list[str]) -> bool:
    """Whether the user named training data by config: ``data.spec`` in the --config file or a --set.
    (DataConfig's default spec is the built-in set; a default must not train on it silently.)"""
    if setting_given(overrides, "data.spec"):
        return True
    if config is None:
        return False
    doc = json.loads(config.read_text())  # load_config has read and checked it already
    return isinstance(doc.get("data"), dict) and "spec" in doc["data"]


def main(argv: list[str]) -> int:
    p = parser("train", "Train a VQ-VAE. Stops at --epochs, --time-budget or train.max_steps.")
    p.add_argument(
        "--data",
        help="data spec: a folder of images, CIFAR-10/MNIST folder, .npz, or 'builtin' (the built-in "
        "photo crops); required unless the config sets data.spec",
    )
    p.add_argument("-o", "--output", "--out", dest="output", type=Path,
                   help="run folder (default: runs/vqkit-DATE-TIME); --out is an alias")  # fmt: skip
    p.add_argument("--config", type=Path,
                   help="JSON config file, or a shipped recipe: recipes/cifar10.json or cifar10")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.quantizer.codebook_size=256")  # fmt: skip
    p.add_argument("--time-budget", type=float, metavar="MIN", help="wall-clock budget in minutes")
    p.add_argument("--epochs", type=float, help="passes over the training split")
    p.add_argument("--max-steps", type=int, help="optimizer steps")
    add_device(p, from_config=True)
    p.add_argument("--resume", action="store_true", help="continue the run in -o RUN")
    p.add_argument("--init-from", type=run_ref, metavar="RUN",
                   help="start from this run's weights; its model section is taken unless --config "
                        "gives one (which must then be the same)")  # fmt: skip
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init-from: train the decoder alone; every image keeps its codes, "
                        "and the run inherits RUN's static table and prior (sharper pictures, same "
                        "rate)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)

    stop = {"time_budget_min": a.time_budget, "epochs": a.epochs, "max_steps": a.max_steps}
    placement = {"device": a.device, "precision": a.precision}  # None: the config's
    if a.resume:
        if a.output is None:
            raise RunError("--resume needs -o RUN (the run to continue)")
        if a.config or a.data or a.overrides or a.init_from or a.decoder_only:
            raise RunError(
                "--resume continues a run as configured; --config/--data/--set/--init-from not allowed"
            )
        cfg = override_for_resume(load_run_config(a.output), **placement, **stop)
    else:
        if a.decoder_only and a.init_from is None:
            raise RunError("--decoder-only needs --init-from RUN (the run whose codes it keeps)")
        config = recipe_path(a.config) if a.config is not None else None  # a path or a recipe's name
        if a.init_from is not None and config is None:
            cfg = apply_overrides(RunConfig(model=load_run_config(a.init_from).model), a.overrides)
        else:
            cfg = load_config(config, a.overrides)
        if a.data:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, spec=a.data))
        elif not names_data(config, a.overrides):
            raise ConfigError(NO_DATA)
        train_changes: dict[str, Any] = {k: v for k, v in placement.items() if v is not None}
        if a.init_from is not None:
            train_changes["init_from"] = str(a.init_from)
            train_changes["trainable"] = "decoder" if a.decoder_only else "all"
        if any(v is not None for v in stop.values()):
            # Stopping criteria on the command line replace the config's, not add to them.
            train_changes.update(stop)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_changes))
    out = a.output or Path("runs") / datetime.now().strftime("vqkit-%Y%m%d-%H%M%S")
    if not a.resume and (out / layout.MODEL_FILE).exists():
        raise RunError(f"{out} already holds a trained run; use --resume or another -o")

    distributed = _init_distributed(cfg.train.device)
    main_process = vdist.is_main()  # asked before the group is torn down
    try:
        result = train(cfg, out, resume=a.resume, progress=not a.no_progress)
    finally:
        if distributed:
            dist.destroy_process_group()
    if main_process:
        ev = result.holdout
        summary = f"{result.stopped} at step {result.step}; run folder {result.run_dir}"
        if ev:
            summary += f"\nholdout: psnr {ev['psnr']:.2f} dB"
            if "codebook_usage" in ev:  # absent for a plain autoencoder
                summary += f", codebook usage {ev['codebook_usage']:.3f}, perplexity {ev['perplexity']:.1f}"
        print(summary)
    # A stopped run is saved and resumable, but not finished: a script must not go on as if it were.
    return INTERRUPTED if result.stopped == "interrupted" else 0
