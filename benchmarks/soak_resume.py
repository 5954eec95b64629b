"""Kill-and-resume soak: random interruptions of a small training run, each followed by --resume, and
the final weights compared with an uninterrupted run's, bit for bit.

Interruptions, drawn at random (kind and moment):
  kill9     SIGKILL: no handler runs; whatever was being written is cut off (a checkpoint commit, a
            metrics line).
  sigterm   SIGTERM: the run saves a checkpoint and exits 0 (as timeout, schedulers and torchrun's
            teardown stop it).
  diskfull  the run folder lives on a size-limited tmpfs (this needs root, for mount); at the chosen
            moment a filler file takes all of its free space, so the next write (a metrics line or a
            checkpoint) fails with ENOSPC for real; the filler is removed before resuming. Without
            root the kind is left out (said in the output), never simulated.
A trial interrupts a run one to three times, resuming after each, then lets it finish. The moment is
a random number of logged steps plus a random delay, so some interruptions land inside a checkpoint
commit (the table counts those that left a staged file or a commit manifest behind).

Each training process is a fresh interpreter (``--worker``) calling vqkit.training.train on one CPU
thread with a tiny model on generated images. Prints a table; writes JSON (machine, command, date) to
benchmarks/results/soak_resume-DATE.json.

    .venv/bin/python benchmarks/soak_resume.py --interruptions 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

import common

KINDS = ("kill9", "sigterm", "diskfull")


def tiny_config(data: Path, steps: int) -> Any:
    from vqkit.config import DataConfig, ModelConfig, QuantizerConfig, RunConfig, TrainConfig

    quantizer = QuantizerConfig(codebook_size=16, code_dim=8, restart_every=4)
    return RunConfig(
        model=ModelConfig(channels=16, res_channels=8, res_blocks=1, quantizer=quantizer),
        data=DataConfig(spec=str(data), image_size=16, holdout=0.1),
        train=TrainConfig(
            batch_size=16,
            lr=3e-3,
            warmup_steps=2,
            max_steps=steps,
            log_every=1,
            eval_every=10**6,
            checkpoint_every=3,
            channels_last=False,
            precision="fp32",
            device="cpu",
            threads=1,
        ),
    )


def worker(run: Path, data: Path, steps: int, resume: bool, step_delay: float) -> int:
    """One training process (what `vqkit train` runs, without the codec's table fit afterwards)."""
    from vqkit.runs import RunError
    from vqkit.training import train

    hook = (lambda step, model: time.sleep(step_delay)) if step_delay else None
    try:
        train(tiny_config(data, steps), run, resume=resume, progress=False, on_step=hook)
    except RunError as e:
        print(f"vqkit: error: {e}", file=sys.stderr)
        return 1
    return 0


def make_data(path: Path) -> None:
    """96 images of 16x16 low-frequency colour blobs (learnable in a few steps)."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(96, 3, 4, 4, generator=g)
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    np.savez(path, images=(up.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))


class Disk:
    """A size-limited tmpfs for the run folders (root only), with a filler that fills it up."""

    def __init__(self, root: Path, size_mb: int) -> None:
        self.path = root / "tmpfs"
        self.path.mkdir()
        self.mounted = False
        if os.geteuid() == 0:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(self.path)],
                                  capture_output=True)  # fmt: skip
            self.mounted = done.returncode == 0

    def fill(self) -> None:
        """Take every free block: big writes, then small ones for the last partial block."""
        for name, chunk in (("filler", 65536), ("filler2", 512)):
            try:
                with open(self.path / name, "wb") as f:
                    while True:
                        f.write(b"\0" * chunk)
                        f.flush()
            except OSError:
                pass

    def free(self) -> None:
        for name in ("filler", "filler2"):
            (self.path / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "--lazy", str(self.path)], check=False)


def start(run: Path, data: Path, steps: int, resume: bool, delay: float) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--worker", str(run), "--data", str(data), "--steps", str(steps),
            "--step-delay", str(delay), *(["--resume"] if resume else [])]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def can_resume(run: Path) -> bool:
    return (run / "train_state.pt").is_file()


def interrupt(proc: subprocess.Popen[str], run: Path, kind: str, after_steps: int, delay: float,
              disk: Disk) -> dict[str, Any]:  # fmt: skip
    """Wait until ``after_steps`` more lines are logged (or the run ends), sleep ``delay``, then
    interrupt; returns what happened."""
    base = logged_steps(run)
    while proc.poll() is None and logged_steps(run) < base + after_steps:
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        _, err = proc.communicate()
        return {"kind": kind, "landed": False, "rc": proc.returncode, "err": err[-300:]}
    if kind == "kill9":
        proc.send_signal(signal.SIGKILL)
    elif kind == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        disk.fill()
    mid_commit = any(p.name.startswith(".") and (".staged" in p.name or p.name == ".commit.json")
                     for p in run.iterdir())  # fmt: skip
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if kind == "diskfull":
        mid_commit = mid_commit or any(".staged" in p.name or p.name == ".commit.json" for p in run.iterdir())
        disk.free()
    clean = err.strip().splitlines()[-1:] if err.strip() else []
    traceback = "Traceback" in err
    return {"kind": kind, "landed": True, "rc": proc.returncode, "mid_commit": mid_commit,
            "traceback": traceback, "last_err": clean[0][:300] if clean else ""}  # fmt: skip


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics_ok(run: Path, steps: int) -> bool:
    """Every step logged exactly once, every line whole."""
    try:
        rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    except ValueError:
        return False
    return [r["step"] for r in rows if r["type"] == "train"] == list(range(1, steps + 1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interruptions", type=int, default=50, help="interruptions in all (default 50)")
    p.add_argument("--steps", type=int, default=40, help="training steps of the run (default 40)")
    p.add_argument("--step-delay", type=float, default=0.01, help="seconds of sleep per step, so an "
                   "interruption can land anywhere in a run of a few steps (default 0.01)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmpfs-mb", type=int, default=8, help="size of the run folders' tmpfs (default 8)")
    p.add_argument(
        "--out", type=Path, help="the JSON's path (default benchmarks/results/soak_resume-DATE.json)"
    )
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker is not None:
        return worker(a.worker, a.data, a.steps, a.resume, a.step_delay)

    when = datetime.now()
    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="vqkit-soak-"))
    disk = Disk(root, a.tmpfs_mb)
    kinds = KINDS if disk.mounted else KINDS[:2]
    if not disk.mounted:
        print("not root (or mount failed): no tmpfs, so no disk-full interruptions", file=sys.stderr)
    data = root / "data.npz"
    make_data(data)
    t0 = time.perf_counter()
    try:
        reference = root / "reference"
        proc = start(reference, data, a.steps, False, 0.0)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{err}")
        events: list[dict[str, Any]] = []
        trials: list[dict[str, Any]] = []
        while len(events) < a.interruptions:
            run = disk.path / f"trial{len(trials)}"
            planned = min(rng.randint(1, 3), a.interruptions - len(events))
            trial_events = []
            for _ in range(planned):
                proc = start(run, data, a.steps, can_resume(run), a.step_delay)
                kind = rng.choice(kinds)
                ev = interrupt(proc, run, kind, rng.randint(1, a.steps // 2), rng.uniform(0, 0.03), disk)
                trial_events.append(ev)
                events.append(ev)
            resumes = 0
            while True:  # finish: resume until the run completes (a start with no checkpoint is fresh)
                proc = start(run, data, a.steps, can_resume(run), 0.0)
                _, err = proc.communicate()
                resumes += 1
                if proc.returncode == 0 or resumes > 3:
                    break
            ok = proc.returncode == 0 and same_weights(reference, run)
            trial = {"trial": len(trials), "events": trial_events, "final_rc": proc.returncode,
                     "final_err": err.strip()[-300:], "weights_equal": ok,
                     "metrics_ok": metrics_ok(run, a.steps)}  # fmt: skip
            trials.append(trial)
            kinds_text = ",".join(e["kind"] + ("" if e["landed"] else "(late)") for e in trial_events)
            print(f"trial {trial['trial']:3d}: {kinds_text:32s} weights equal: {ok}, "
                  f"metrics whole: {trial['metrics_ok']}", flush=True)  # fmt: skip
            shutil.rmtree(run, ignore_errors=True)
    finally:
        disk.close()
        shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - t0

    landed = [e for e in events if e["landed"]]
    by_kind = Counter(e["kind"] for e in landed)
    summary = {
        "trials": len(trials),
        "interruptions": len(events),
        "landed": len(landed),
        "by_kind": dict(by_kind),
        "mid_commit": sum(bool(e.get("mid_commit")) for e in landed),
        "tracebacks": sum(bool(e.get("traceback")) for e in landed),
        "sigterm_exit_0": sum(e["rc"] == 0 for e in landed if e["kind"] == "sigterm"),
        "weights_equal": sum(t["weights_equal"] for t in trials),
        "metrics_whole": sum(t["metrics_ok"] for t in trials),
        "seconds": round(seconds, 1),
    }
    print()
    print(f"{'interruptions (landed)':28s} {summary['interruptions']} ({summary['landed']})")
    for kind in KINDS:
        print(f"  {kind:26s} {by_kind.get(kind, 0)}")
    print(f"{'left a commit half done':28s} {summary['mid_commit']}")
    print(f"{'SIGTERM exits with 0':28s} {summary['sigterm_exit_0']} of {by_kind.get('sigterm', 0)}")
    print(f"{'tracebacks':28s} {summary['tracebacks']}")
    print(f"{'trials':28s} {summary['trials']}")
    print(f"{'final weights bit-equal':28s} {summary['weights_equal']} of {summary['trials']}")
    print(f"{'metrics whole, once each':28s} {summary['metrics_whole']} of {summary['trials']}")
    print(f"{'wall time (s)':28s} {summary['seconds']}")
    doc = {"benchmark": "soak_resume", "date": when.isoformat(timespec="seconds"),
           "command": " ".join(sys.argv), "machine": common.machine(), "disk_full": "tmpfs" if disk.mounted
           else "not run (needs root)", "steps": a.steps, "summary": summary, "trials": trials}  # fmt: skip
    common.write_result(doc, "soak_resume", when, a.out)
    return 0 if summary["weights_equal"] == summary["trials"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
