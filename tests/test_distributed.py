"""Data-parallel training on CPU (gloo): every rank holds the same codebook, and two processes
over a global batch match one process over the same batch."""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vqkit.data import ImageSet
from vqkit.models import VQVAE
from vqkit.pipeline import train

from .conftest import decoder_only, gloo_group, smooth_image_set, tiny_run_config

STEPS = 10


def _images() -> ImageSet:
    return smooth_image_set(80)


def _config():  # type: ignore[no-untyped-def]
    cfg = tiny_run_config("test", max_steps=STEPS, batch_size=16, log_every=5, eval_every=1000)
    # restart every 3 steps so restarts really happen during the run
    q = dataclasses.replace(cfg.model.quantizer, restart_every=3, dead_threshold=0.3)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))


def _capture(out: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    def hook(step: int, model: VQVAE) -> None:
        if step == STEPS:
            out.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    return hook


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with gloo_group(rank, world, init_file):
        torch.set_num_threads(1)
        state: dict[str, torch.Tensor] = {}
        train(_config(), Path(out_dir) / "run", progress=False, data=_images(), on_step=_capture(state))
        torch.save(state, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_share_codebook_and_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert int(r0["quantizer.restarts_total"]) > 0  # the run exercised dead-code restarts
    for key in ("quantizer.codebook", "quantizer.ema_cluster_size", "quantizer.ema_embed_sum"):
        assert torch.equal(r0[key], r1[key]), key  # identical on every rank, bit for bit
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # DDP keeps parameters identical too
    assert (tmp_path / "run" / "model.safetensors").is_file()  # rank 0 wrote the run folder

    single: dict[str, torch.Tensor] = {}
    torch.set_num_threads(1)
    train(_config(), tmp_path / "single", progress=False, data=_images(), on_step=_capture(single))
    # Same global batch, same restarts: equal up to float reduction order. Adam divides by
    # sqrt(v), which magnifies 1e-7 gradient differences in tiny-gradient weights to ~1e-4.
    assert int(single["quantizer.restarts_total"]) == int(r0["quantizer.restarts_total"])
    for key in single:
        if not single[key].is_floating_point():
            assert torch.equal(r0[key], single[key]), key
            continue
        # A near-tie latent may pick another code under the other summation order; one such
        # flip moves an EMA count by (1 - decay) = 0.01, hence the wider bound on EMA buffers.
        tol = (0.05, 0.05) if "ema_" in key else (1e-2, 1e-3)
        torch.testing.assert_close(
            r0[key], single[key], rtol=tol[0], atol=tol[1], msg=lambda m, k=key: f"{k}: {m}"
        )
    np.testing.assert_equal(len(r0), len(single))


def _interrupted_worker(rank: int, world: int, init_file: str, out_dir: str, signum: int) -> None:
    """Only rank 1 gets the signal (Ctrl-C's SIGINT, or SIGTERM as timeout and schedulers send),
    from inside step 4."""
    import signal

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)

    def hook(step: int, model: VQVAE) -> None:
        if rank == 1 and step == 4:
            signal.raise_signal(signal.Signals(signum))

    try:
        result = train(_config(), Path(out_dir) / "run", progress=False, data=_images(), on_step=hook)
        torch.save({"step": result.step, "stopped": result.stopped}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path, signum: int) -> None:
    args = (2, str(tmp_path / "init"), str(tmp_path), int(signum))
    ctx = mp.spawn(_interrupted_worker, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=2):  # a rank left waiting in a collective would hang here: fail instead
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError("the ranks did not stop together (hung in a collective)")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0 == r1 and r0["stopped"] == "interrupted" and 4 <= r0["step"] < STEPS
    assert (tmp_path / "run" / "train_state.pt").is_file()  # rank 0 saved the checkpoint to resume from


def _decoder_worker(rank: int, world: int, init_file: str, out_dir: str, source: str) -> None:
    with gloo_group(rank, world, init_file):
        torch.set_num_threads(1)
        cfg = decoder_only(_config(), source)
        state: dict[str, torch.Tensor] = {}
        train(cfg, Path(out_dir) / "tuned", progress=False, data=_images(), on_step=_capture(state))
        torch.save(state, Path(out_dir) / f"tuned{rank}.pt")


def test_two_processes_fine_tune_the_decoder_alone(tmp_path: Path) -> None:
    """Decoder fine-tuning under DDP: the frozen encoder and codebook stay bitwise the source's on
    every rank (no EMA, no restarts, no gradients), the decoders agree, and rank 0 carries the
    source's static table into the finished run."""
    source = tmp_path / "source"
    torch.set_num_threads(1)
    train(_config(), source, progress=False, data=_images())
    mp.spawn(
        _decoder_worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(source)), nprocs=2, join=True
    )
    r0, r1 = (torch.load(tmp_path / f"tuned{r}.pt", weights_only=True) for r in (0, 1))
    before = load_file(source / "model.safetensors")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
        if not key.startswith("decoder."):
            assert torch.equal(r0[key], before[key]), key
    assert any(not torch.equal(r0[k], before[k]) for k in r0 if k.startswith("decoder."))
    assert "carried_from" in (tmp_path / "tuned" / "entropy_static.json").read_text()
