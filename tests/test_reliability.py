"""Reliability of the run folder: one writer at a time, a fingerprint of the model rather than of its
file's bytes, checkpoints that commit as a set, budgets that are checked, SIGTERM that saves, files
that others can read. Each test reproduces one failure seen in use (see the docstrings)."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vqkit.cli import main as cli_main
from vqkit.config import ConfigError, TrainConfig
from vqkit.models import VQVAE
from vqkit.priors import load_prior, train_prior
from vqkit.priors.train import calibrate_run
from vqkit.runs import RunError, load_model, model_fingerprint
from vqkit.training import train

from .conftest import tiny_run_config

SRC = Path(__file__).resolve().parents[1] / "src"
TINY_PRIOR = ["model.width=16", "model.layers=1", "model.heads=2", "train.batch_size=16",
              "train.warmup_steps=2", "train.log_every=2", "train.eval_every=10",
              "train.checkpoint_every=4"]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Bit-exact comparisons between runs need one thread count; tiny models run fastest on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def metrics_steps(run: Path, name: str = "metrics.jsonl") -> list[int]:
    rows = [json.loads(ln) for ln in (run / name).read_text().splitlines()]
    return [r["step"] for r in rows if r["type"] == "train"]


def hold_lock_in_subprocess(run: Path) -> subprocess.Popen[str]:
    """Another process that holds the run folder's lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from vqkit.runs.lock import run_lock
        with run_lock({str(run)!r}, "test holder"):
            print("held", flush=True)
            sys.stdin.read()
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held", "the holder could not take the lock"
    return proc


# ---- 1. one writer at a time --------------------------------------------------------------------


def test_a_second_training_into_the_same_folder_is_refused(tiny_npz: Path, tmp_path: Path) -> None:
    """Failure 1: two trainings into one folder at once both ran, and the metrics interleaved."""
    run = tmp_path / "run"
    cfg = tiny_run_config(str(tiny_npz), max_steps=8, log_every=1)
    other = tiny_run_config(str(tiny_npz), max_steps=8, log_every=1, lr=1e-3)  # a different config
    seen: list[BaseException | None] = []

    def second_writer(step: int, model: VQVAE) -> None:
        if step != 2:
            return

        def target() -> None:
            try:
                train(other, run, progress=False)
                seen.append(None)
            except Exception as e:  # the refusal is what the test wants to see
                seen.append(e)

        t = threading.Thread(target=target)  # another writer (a thread: flock is per open file)
        t.start()
        t.join()

    train(cfg, run, on_step=second_writer, progress=False)
    assert len(seen) == 1 and isinstance(seen[0], RunError), seen
    message = str(seen[0])
    assert f"PID {os.getpid()}" in message and socket.gethostname() in message and "train" in message
    assert metrics_steps(run) == list(range(1, 9))  # the first run's records, once each
    assert json.loads((run / "config.json").read_text())["config"]["train"]["lr"] == cfg.train.lr
    load_model(run)
    assert not (run / "run.lock").exists()  # released when the writer finished


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    data = root / "data.npz"
    from .conftest import smooth_images

    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3)
    run = root / "run"
    torch.set_num_threads(1)
    train(tiny_run_config(str(data), max_steps=4), run, progress=False)
    train_prior(run, max_steps=8, overrides=TINY_PRIOR, progress=False)
    return run


def test_prior_training_and_calibration_wait_for_no_one(prior_run: Path) -> None:
    """Failure 1: two `vqkit prior train` at once mixed their metrics and their prior_eval.json."""
    before = (prior_run / "prior_metrics.jsonl").read_text()
    holder = hold_lock_in_subprocess(prior_run)
    try:
        with pytest.raises(RunError, match=rf"PID {holder.pid} on {socket.gethostname()}"):
            train_prior(prior_run, max_steps=8, overrides=TINY_PRIOR, progress=False, overwrite=True)
        with pytest.raises(RunError, match=rf"PID {holder.pid}"):
            calibrate_run(prior_run)
    finally:
        holder.communicate("")
    assert (prior_run / "prior_metrics.jsonl").read_text() == before
    load_prior(prior_run)  # readers never need the lock
    calibrate_run(prior_run)  # and once the holder is gone, the writer goes ahead


def test_carry_static_fit_and_report_wait_for_no_one(prior_run: Path, tmp_path: Path) -> None:
    """Every writer of a run folder takes its lock: carrying entropy models, fitting the static
    table and writing the report are refused while another process writes, and go ahead after."""
    from vqkit.cli import main
    from vqkit.codec import carry_entropy_models, fit_static_model

    spec = json.loads((prior_run / "config.json").read_text())["config"]["data"]["spec"]
    holder = hold_lock_in_subprocess(prior_run)
    try:
        with pytest.raises(RunError, match=rf"PID {holder.pid}"):
            fit_static_model(prior_run, spec)
        with pytest.raises(RunError, match=rf"PID {holder.pid}"):
            carry_entropy_models(tmp_path / "elsewhere", prior_run)
        assert main(["report", str(prior_run), "-o", str(tmp_path / "report.html")]) == 1
        assert not (tmp_path / "report.html").exists()
    finally:
        holder.communicate("")
    assert main(["report", str(prior_run), "-o", str(tmp_path / "report.html")]) == 0
    fit_static_model(prior_run, spec)


def test_a_killed_writers_lock_is_taken_over(tiny_npz: Path, tmp_path: Path) -> None:
    """A writer killed with -9 leaves its lock file behind; the next writer takes it over."""
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock_in_subprocess(run)
    holder.kill()
    holder.wait()
    assert (run / "run.lock").exists()
    result = train(tiny_run_config(str(tiny_npz), max_steps=2), run, progress=False)
    assert result.step == 2 and not (run / "run.lock").exists()


# ---- 2. the fingerprint identifies the model, not the file's bytes ----------------------------


def reorder_header(path: Path) -> None:
    """Rewrite a safetensors file with its header's JSON keys in reverse order: the same tensors and
    metadata, other bytes (as two save_file calls in two processes may give)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__")
    flipped = {"__metadata__": dict(reversed(list(meta.items()))), **dict(reversed(list(header.items())))}
    text = json.dumps(flipped, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def test_fingerprint_ignores_the_header_layout(prior_run: Path, tmp_path: Path) -> None:
    """Failure 2: the fingerprint hashed the file; an equal model saved again refused its prior."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(prior_run, run)
    before = model_fingerprint(run)
    reorder_header(run / "model.safetensors")
    assert (run / "model.safetensors").read_bytes() != (prior_run / "model.safetensors").read_bytes()
    assert model_fingerprint(run) == before
    load_prior(run)


def test_resume_with_no_new_steps_leaves_the_weights_file_alone(tiny_npz: Path, tmp_path: Path) -> None:
    """Failure 2: `--resume` on a finished run rewrote model.safetensors."""
    run = tmp_path / "run"
    cfg = tiny_run_config(str(tiny_npz), max_steps=4)
    train(cfg, run, progress=False)
    fp, st = model_fingerprint(run), (run / "model.safetensors").stat()
    result = train(cfg, run, resume=True, progress=False)
    assert result.step == 4
    after = (run / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert model_fingerprint(run) == fp


def test_a_run_made_before_keeps_its_file_fingerprint(prior_run: Path, tmp_path: Path) -> None:
    """Runs made before the content fingerprint (weights without its metadata entry) keep the hash of
    their file's bytes, which their priors, tables and .vqk files carry, also through a resume that
    runs no new step."""
    import hashlib
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from vqkit.priors import save_prior

    run = tmp_path / "old"
    shutil.copytree(prior_run, run)
    path = run / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k not in ("fingerprint", "step")}
    save_file(load_file(path), str(path), metadata=meta)  # as vqkit wrote weights before
    legacy = hashlib.sha256(path.read_bytes()).digest()[:8].hex()
    assert model_fingerprint(run) == legacy
    save_prior(run, load_prior(prior_run))  # stamped with the legacy fingerprint
    cfg = tiny_run_config(
        json.loads((run / "config.json").read_text())["config"]["data"]["spec"], max_steps=4
    )
    train(cfg, run, resume=True, progress=False)
    assert model_fingerprint(run) == legacy
    load_prior(run)


# ---- 4. checkpoints commit as a set -----------------------------------------------------------


def fail_nth_save(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """torch.save raises ENOSPC on its n-th call: a disk that fills while a checkpoint is written."""
    real, calls = torch.save, [0]

    def save(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_during_a_checkpoint_keeps_the_last_complete_one(
    tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure 4: new weights were left beside the old training state, and --resume took the pair."""
    cfg = tiny_run_config(str(tiny_npz), max_steps=12, checkpoint_every=4, eval_every=100)
    whole = tmp_path / "whole"
    train(cfg, whole, progress=False)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        fail_nth_save(m, 2)  # the checkpoint of step 8
        with pytest.raises((OSError, RunError)):
            train(cfg, run, progress=False)
    assert torch.load(run / "train_state.pt", weights_only=True)["step"] == 4
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no staged files left
    train(cfg, run, resume=True, progress=False)
    assert_same_weights(whole, run)
    assert metrics_steps(run) == metrics_steps(whole)


def test_resume_refuses_weights_and_state_of_different_steps(tiny_npz: Path, tmp_path: Path) -> None:
    """Failure 4: a mismatched pair (weights of one step, training state of another) resumed silently."""
    cfg = tiny_run_config(str(tiny_npz), max_steps=4)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    early = (run / "train_state.pt").read_bytes()
    train(tiny_run_config(str(tiny_npz), max_steps=8), run, resume=True, progress=False)
    (run / "train_state.pt").write_bytes(early)
    with pytest.raises(RunError, match=r"step 8.*step 4|step 4.*step 8"):
        train(tiny_run_config(str(tiny_npz), max_steps=12), run, resume=True, progress=False)


def test_a_torn_last_metrics_line_is_dropped_on_resume(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 4: a cut-off last line of metrics.jsonl made --resume crash with a traceback."""
    run = tmp_path / "run"
    train(tiny_run_config(str(tiny_npz), max_steps=4, log_every=1), run, progress=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "step": 5, "lo')
    capsys.readouterr()
    train(tiny_run_config(str(tiny_npz), max_steps=6, log_every=1), run, resume=True, progress=False)
    assert "metrics.jsonl" in capsys.readouterr().err  # the warning says what was dropped
    assert metrics_steps(run) == list(range(1, 7))


def test_disk_full_during_a_prior_checkpoint_keeps_the_last_complete_one(
    prior_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure 4, the prior's checkpoint set: weights, config and state commit together."""
    import shutil

    whole, run = tmp_path / "whole", tmp_path / "run"
    shutil.copytree(prior_run, whole)
    shutil.copytree(prior_run, run)
    train_prior(whole, max_steps=12, overrides=TINY_PRIOR, progress=False, overwrite=True)
    with monkeypatch.context() as m:
        fail_nth_save(m, 2)  # the prior's checkpoint of step 8
        with pytest.raises((OSError, RunError)):
            train_prior(run, max_steps=12, overrides=TINY_PRIOR, progress=False, overwrite=True)
    train_prior(run, resume=True, progress=False)
    a, b = load_file(whole / "prior.safetensors"), load_file(run / "prior.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- 5. budgets are checked -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [{"time_budget_min": -1.0}, {"time_budget_min": math.nan}, {"time_budget_min": 0.0},
     {"time_budget_min": math.inf}, {"epochs": -1.0}, {"epochs": 0.0}, {"epochs": math.nan},
     {"max_steps": 0}],
)  # fmt: skip
def test_bad_budgets_are_refused(bad: dict[str, Any]) -> None:
    """Failure 5: a negative or NaN budget trained forever, 0 crashed, --epochs -1 trained one step."""
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_bad_budgets_are_refused_by_the_cli_and_the_prior(
    tiny_npz: Path, tmp_path: Path, prior_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag, value in (("--epochs", "-1"), ("--time-budget", "0")):
        argv = ["train", "--data", str(tiny_npz), "--out", str(tmp_path / "r"), flag, value, "--no-progress"]
        assert cli_main(argv) == 1
        assert capsys.readouterr().err.startswith("vqkit: error:")
    for bad in ({"time_budget_min": -1.0}, {"time_budget_min": math.nan}, {"time_budget_min": 0.0},
                {"epochs": -1.0}):  # fmt: skip
        with pytest.raises(ConfigError):  # max_steps too, so today's code stops instead of hanging
            train_prior(prior_run, max_steps=2, overrides=TINY_PRIOR, progress=False, overwrite=True,
                        **bad)  # fmt: skip
    load_prior(prior_run)  # a refused start leaves the saved prior as it was


# ---- 6. SIGTERM saves ---------------------------------------------------------------------------


TRAIN_SCRIPT = """
import sys, time
from vqkit.config import DataConfig, ModelConfig, QuantizerConfig, RunConfig, TrainConfig
from vqkit.training import train
from tests.conftest import tiny_run_config
cfg = tiny_run_config(sys.argv[1], max_steps=int(sys.argv[3]), log_every=1, checkpoint_every=1000,
                      eval_every=1000, threads=1)
train(cfg, sys.argv[2], progress=False, on_step=lambda step, model: time.sleep(0.05))
"""


def test_sigterm_saves_and_resume_equals_uninterrupted(tiny_npz: Path, tmp_path: Path) -> None:
    """Failure 6: SIGTERM (timeout, schedulers, torchrun's teardown) killed training with nothing saved."""
    steps = 40
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{SRC.parent}"}
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(tiny_npz), str(run), str(steps)],
                            env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    stopped = torch.load(run / "train_state.pt", weights_only=True)["step"]
    assert 0 < stopped < steps
    cfg = tiny_run_config(str(tiny_npz), max_steps=steps, log_every=1, checkpoint_every=1000,
                          eval_every=1000, threads=1)  # fmt: skip
    train(cfg, run, resume=True, progress=False)
    whole = tmp_path / "whole"
    train(cfg, whole, progress=False)
    assert_same_weights(whole, run)


# ---- 8. file modes ------------------------------------------------------------------------------


def test_weights_are_readable_like_every_other_file(prior_run: Path) -> None:
    """Failure 8: model.safetensors was written 0600 (safetensors writes a new file of its own)."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "prior.safetensors", "config.json", "train_state.pt"):
        assert stat.S_IMODE((prior_run / name).stat().st_mode) == 0o666 & ~umask, name


# ---- the first line of a run says how the images become crops --------------------------------


def test_the_run_says_whether_it_crops_or_tiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vqkit.data import ImageSet
    from vqkit.training.loop import prepare_data

    from .conftest import smooth_images

    cfg = tiny_run_config("x")
    big = list(smooth_images(8, size=24))
    same = ImageSet(big, None, None, 3, "same", tuple(map(str, range(8))))
    td = prepare_data(cfg, same)
    assert "random 16x16 crop" in td.description and "8 images of 24x24" in td.description
    mixed = ImageSet([*big[:4], *smooth_images(4, size=40)], None, None, 3, "mixed", tuple("abcdefgh"))
    td = prepare_data(cfg, mixed)
    assert (
        "tiled" in td.description and f"{len(td.train) + len(td.holdout)} fixed 16x16 crops" in td.description
    )
    run = tmp_path / "run"
    capsys.readouterr()
    train(tiny_run_config("x", max_steps=1), run, data=mixed, progress=False)
    assert capsys.readouterr().err.splitlines()[0] == td.description


def test_an_interrupted_commit_is_finished_after_its_manifest_and_forgotten_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set commits at its manifest: a crash after it (here between the two renames) is completed
    by the next writer; a crash before it (a writer that fails) leaves the previous set."""
    from vqkit.runs import commit_files, run_lock
    from vqkit.runs import files as run_files

    def text(value: str) -> Any:
        return lambda p: p.write_text(value)

    commit_files(tmp_path, {"a": text("1"), "b": text("1")}, {"step": 1})
    real, renames = os.replace, []

    def crash_on_second_rename(src: Any, dst: Any) -> None:
        renames.append(Path(dst).name)
        if renames.count("b") == 1 and Path(dst).name == "b":
            raise KeyboardInterrupt  # kill -9 between the renames
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(run_files.os, "replace", crash_on_second_rename)
        with pytest.raises(KeyboardInterrupt):
            commit_files(tmp_path, {"a": text("2"), "b": text("2")}, {"step": 2})
    assert (tmp_path / "a").read_text() == "2" and (tmp_path / "b").read_text() == "1"  # torn, for now
    with run_lock(tmp_path, "test"):  # the next writer finishes the commit
        pass
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text() == "2"

    def full_disk(p: Path) -> None:
        raise OSError(errno.ENOSPC, "no space")

    with pytest.raises(OSError):
        commit_files(tmp_path, {"a": text("3"), "b": full_disk}, {"step": 3})
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_the_prior_library_takes_typed_configs(prior_run: Path, tmp_path: Path) -> None:
    """Typed configs in, the same prior out as from the command line's key=value strings."""
    import shutil

    from vqkit.config import StopConfig
    from vqkit.priors import PriorConfig, PriorTrainConfig, read_prior_doc
    from vqkit.priors.config import apply_prior_overrides

    typed, strings = tmp_path / "typed", tmp_path / "strings"
    shutil.copytree(prior_run, typed)
    shutil.copytree(prior_run, strings)
    model, fit = apply_prior_overrides(PriorConfig(), PriorTrainConfig(), TINY_PRIOR)
    train_prior(typed, model_config=model, train_config=fit, stop=StopConfig(max_steps=4), overwrite=True,
                progress=False)  # fmt: skip
    train_prior(strings, overrides=TINY_PRIOR, max_steps=4, overwrite=True, progress=False)
    a, b = load_file(typed / "prior.safetensors"), load_file(strings / "prior.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_prior_doc(typed)["stop"] == {"epochs": None, "max_steps": 4, "time_budget_min": None}
    with pytest.raises(ConfigError, match="not both"):
        train_prior(typed, stop=StopConfig(max_steps=4), max_steps=4, overwrite=True, progress=False)
