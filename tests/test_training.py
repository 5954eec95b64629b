"""Training runs: the run folder, Ctrl-C + resume equals uninterrupted, NaN handling, budgets."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vqkit.config import ConfigError
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.runs import load_model, write_text
from vqkit.runs.results import read_result
from vqkit.training import TrainingDiverged
from vqkit.training.schedule import Horizon, learning_rate

from .conftest import tiny_run_config


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["type"] == "train"]


def test_run_folder_contents(tiny_npz: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(tiny_run_config(str(tiny_npz)), run, progress=False)
    assert result.stopped == "finished" and result.step == 12
    for name in ("config.json", "model.safetensors", "train_state.pt", "metrics.jsonl",
                 "reconstructions.png", "eval.json", "entropy_static.json"):  # fmt: skip
        assert (run / name).is_file(), name
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["step"] == 12 and "optimizer" in state
    doc = json.loads((run / "config.json").read_text())
    assert doc["format"] == "vqkit-run" and doc["config"]["train"]["max_steps"] == 12
    ev = read_result(run / "eval.json", "eval").data  # a versioned result, as the report reads it
    assert {"psnr", "codebook_usage", "perplexity", "dead_codes", "bpp_nominal"} <= set(ev)
    assert not list(run.glob(".*"))  # no temporary files left behind by atomic writes


def test_interrupt_then_resume_equals_uninterrupted(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config(str(tiny_npz), max_steps=12, log_every=1)
    whole = tmp_path / "whole"
    train(cfg, whole, progress=False)

    def ctrl_c_at_5(step: int, model: VQVAE) -> None:
        if step == 5:
            signal.raise_signal(signal.SIGINT)  # what a user's Ctrl-C delivers

    parts = tmp_path / "parts"
    first = train(cfg, parts, progress=False, on_step=ctrl_c_at_5)
    assert first.stopped == "interrupted" and first.step == 5
    assert torch.load(parts / "train_state.pt", weights_only=True)["step"] == 5
    second = train(cfg, parts, resume=True, progress=False)
    assert second.stopped == "finished" and second.step == 12

    a, b = losses(whole), losses(parts)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 13))
    for (_, la), (_, lb) in zip(a, b, strict=True):
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-7)
    wa, wb = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)


def test_resuming_a_finished_run_changes_nothing(tiny_npz: Path, tmp_path: Path) -> None:
    """A finished run resumed with the same horizon is a no-op: every file keeps its bytes (eval.json
    its date, the static table its counts, metrics.jsonl its length) and the saved evaluation is
    returned. A longer horizon still continues it."""
    run = tmp_path / "run"
    first = train(tiny_run_config(str(tiny_npz)), run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    again = train(first.config, run, resume=True, progress=False)
    assert again.stopped == "already finished" and again.step == first.step
    assert again.holdout == pytest.approx(first.holdout)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    longer = dataclasses.replace(first.config, train=dataclasses.replace(first.config.train, max_steps=14))
    assert train(longer, run, resume=True, progress=False).step == 14


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config(str(tiny_npz), max_steps=12, checkpoint_every=4, log_every=2)

    def poison(step: int, model: VQVAE) -> None:
        if step == 6:
            with torch.no_grad():
                next(model.decoder.parameters()).fill_(float("nan"))

    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step 4\)"):
        train(cfg, run, progress=False, on_step=poison)
    assert torch.load(run / "train_state.pt", weights_only=True)["step"] == 4
    model = load_model(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_stopping_criteria_and_schedule() -> None:
    with pytest.raises(ConfigError, match="stopping point"):
        Horizon.from_config(tiny_run_config("x", max_steps=None).train, 10)
    cfg = tiny_run_config("x", max_steps=None, epochs=2.0, time_budget_min=1.0).train
    h = Horizon.from_config(cfg, 10)
    assert h.max_steps == 20 and h.progress(10, 0.0) == 0.5 and h.progress(1, 45.0) == 0.75
    assert h.done(20, 0.0) and h.done(1, 60.0) and not h.done(19, 59.0)
    lrs = [learning_rate(cfg, s, s / 20) for s in range(21)]
    assert lrs[0] < lrs[1] <= cfg.lr  # warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))  # cosine decay
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def test_codebook_stays_healthy_on_real_data(tmp_path: Path) -> None:
    """Restarts keep the codebook in use: far more codes live after training than collapse leaves."""
    from vqkit.data import load_dataset

    data = load_dataset("builtin", max_images=1024)
    cfg = tiny_run_config("builtin", max_steps=60, batch_size=32, eval_every=1000)
    cfg = type(cfg)(model=cfg.model, data=type(cfg.data)(spec="builtin", image_size=32,
                    holdout=0.25), train=cfg.train)  # fmt: skip
    result = train(cfg, tmp_path / "run", progress=False, data=data)
    assert result.holdout["codebook_usage"] >= 0.75
    assert result.holdout["perplexity"] >= 8


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Atomic writes (checkpoints, configs, .vqk files) get 0666 less the umask, as open() would,
    not the temporary file's private 0600: a run folder is meant to be shared."""
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask
