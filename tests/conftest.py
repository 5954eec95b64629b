"""Shared fixtures: tiny configs and tiny generated data keep the default run fast."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from vqkit.config import DataConfig, ModelConfig, QuantizerConfig, RunConfig, TrainConfig
from vqkit.data import ImageSet

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def session_vqkit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run registry (vqkit.runs.registry) of module- and session-scoped fixtures, which are set up
    before any function-scoped fixture: never the user's ~/.local/share/vqkit."""
    home = tmp_path_factory.mktemp("vqkit_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQKIT_HOME", str(home))
        yield home


@pytest.fixture(autouse=True)
def vqkit_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own, empty run registry."""
    home = tmp_path_factory.mktemp("vqkit_home")
    monkeypatch.setenv("VQKIT_HOME", str(home))
    return home


def tiny_model_config(**quantizer: object) -> ModelConfig:
    q = {"codebook_size": 16, "code_dim": 8, **quantizer}
    return ModelConfig(channels=16, res_channels=8, res_blocks=1, quantizer=QuantizerConfig(**q))  # type: ignore[arg-type]


def smooth_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 images of random low-frequency colour blobs (learnable quickly)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (up.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def smooth_image_set(n: int, size: int = 16) -> ImageSet:
    """``smooth_images(n)`` as an in-memory ImageSet (what training takes as ``data=``)."""
    arr = smooth_images(n, size)
    return ImageSet(list(arr), None, None, 3, "test", tuple(str(i) for i in range(n)))


@contextmanager
def gloo_group(rank: int, world: int, init_file: str) -> Iterator[None]:
    """A CPU process group for one rank of an ``mp.spawn``ed test, torn down however the rank ends."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.npz"
    images = smooth_images(96)
    np.savez(path, images=images, labels=np.arange(96) % 3)
    return path


def tiny_run_config(spec: str, **train: object) -> RunConfig:
    t = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "max_steps": 12, "log_every": 2,
         "eval_every": 6, "checkpoint_every": 6, "channels_last": False, "precision": "fp32",
         **train}  # fmt: skip
    return RunConfig(
        model=tiny_model_config(restart_every=4),
        data=DataConfig(spec=spec, image_size=16, holdout=0.1),
        train=TrainConfig(**t),  # type: ignore[arg-type]
    )


def decoder_only(cfg: RunConfig, source: Path | str, **train: object) -> RunConfig:
    """``cfg`` fine-tuning the decoder of the run in ``source`` (train.init_from, trainable=decoder)."""
    t = dataclasses.replace(cfg.train, init_from=str(source), trainable="decoder", **train)  # type: ignore[arg-type]
    return dataclasses.replace(cfg, train=t)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and do not fight a busy machine for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ctrl_c_at(monkeypatch: pytest.MonkeyPatch, module: object, at: int) -> None:
    """Make the training loop that ``module`` runs (its ``run_fit``) get a real SIGINT after step ``at``,
    as a user's Ctrl-C, whatever step hook its caller passes."""
    import signal

    real = module.run_fit  # type: ignore[attr-defined]

    def run_fit(*args: object, on_step: Callable[[int], object] | None = None, **kw: object) -> object:
        def hook(step: int) -> object:
            if step == at:
                signal.raise_signal(signal.SIGINT)
            return on_step(step) if on_step is not None else None

        return real(*args, on_step=hook, **kw)

    monkeypatch.setattr(module, "run_fit", run_fit)
