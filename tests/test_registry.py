"""The local run registry: fingerprint -> run folder, stale entries skipped, never in the user's home."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vqkit.pipeline import train
from vqkit.runs import layout, model_fingerprint, registry

from .conftest import smooth_images, tiny_run_config


def fake_run(folder: Path, weights: bytes) -> Path:
    """A folder whose model fingerprint is that of ``weights`` (the registry reads nothing else)."""
    folder.mkdir(parents=True)
    (folder / layout.MODEL_FILE).write_bytes(weights)
    return folder


def test_tests_never_touch_the_users_registry(vqkit_home: Path) -> None:
    assert registry.registry_path() == vqkit_home / registry.REGISTRY_FILE
    assert Path(os.environ["VQKIT_HOME"]) == vqkit_home


def test_register_then_lookup(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", b"model a")
    b = fake_run(tmp_path / "b", b"model b")
    fa, fb = registry.register(a), registry.register(b)
    assert fa == model_fingerprint(a) and fb == model_fingerprint(b) and fa != fb
    assert registry.lookup(fa) == a.resolve() and registry.lookup(fb) == b.resolve()
    assert registry.lookup("0" * 16) is None
    assert [f for f, _ in registry.registered_runs()] == [fb, fa]  # newest first
    registry.register(a)  # used again: a becomes the newest
    assert [f for f, _ in registry.registered_runs()] == [fa, fb]
    doc = json.loads(registry.registry_path().read_text())
    assert doc["format"] == "vqkit-run-registry" and doc["runs"] == {
        fb: str(b.resolve()),
        fa: str(a.resolve()),
    }


def test_relative_paths_are_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = fake_run(tmp_path / "run", b"weights")
    monkeypatch.chdir(tmp_path)
    fingerprint = registry.register(Path("run"))
    monkeypatch.chdir("/")
    assert fingerprint is not None and registry.lookup(fingerprint) == run.resolve()


def test_stale_entries_are_skipped(tmp_path: Path) -> None:
    gone = fake_run(tmp_path / "gone", b"deleted later")
    changed = fake_run(tmp_path / "changed", b"before retraining")
    kept = fake_run(tmp_path / "kept", b"unchanged")
    f_gone, f_changed, f_kept = (registry.register(r) for r in (gone, changed, kept))
    shutil.rmtree(gone)
    (changed / layout.MODEL_FILE).write_bytes(b"after retraining")  # same folder, another model
    assert registry.lookup(str(f_gone)) is None and registry.lookup(str(f_changed)) is None
    assert registry.lookup(str(f_kept)) == kept.resolve()
    assert list(registry.registered_runs()) == [(f_kept, kept.resolve())]
    registry.register(changed)  # its new fingerprint; the folder that is gone is dropped on the way
    runs = json.loads(registry.registry_path().read_text())["runs"]
    assert f_gone not in runs and model_fingerprint(changed) in runs


def test_a_copy_registered_later_wins(tmp_path: Path) -> None:
    first = fake_run(tmp_path / "first", b"same model")
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    fingerprint = registry.register(first)
    assert registry.register(copy) == fingerprint
    assert registry.lookup(str(fingerprint)) == copy.resolve()


def test_a_broken_registry_reads_empty_and_is_replaced(tmp_path: Path) -> None:
    registry.registry_path().parent.mkdir(parents=True, exist_ok=True)
    registry.registry_path().write_text("{not json")
    run = fake_run(tmp_path / "run", b"weights")
    assert list(registry.registered_runs()) == []
    fingerprint = registry.register(run)
    assert fingerprint is not None and registry.lookup(fingerprint) == run.resolve()


def test_a_newer_registry_is_left_alone(tmp_path: Path) -> None:
    newer = {"format": "vqkit-run-registry", "format_version": 99, "runs": {}, "more": "fields"}
    registry.registry_path().parent.mkdir(parents=True, exist_ok=True)
    registry.registry_path().write_text(json.dumps(newer))
    run = fake_run(tmp_path / "run", b"weights")
    assert registry.register(run) == model_fingerprint(run)
    assert json.loads(registry.registry_path().read_text()) == newer


def test_an_unwritable_registry_never_fails_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("VQKIT_HOME", str(blocker / "vqkit"))  # a folder under a file cannot be made
    run = fake_run(tmp_path / "run", b"weights")
    assert registry.register(run) is None
    assert registry.lookup(model_fingerprint(run)) is None
    assert registry.register(tmp_path / "not_a_run") is None


def test_training_registers_the_run(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    np.savez(data, images=smooth_images(32))
    result = train(tiny_run_config(str(data), max_steps=2), tmp_path / "run", progress=False)
    assert registry.lookup(model_fingerprint(result.run_dir)) == (tmp_path / "run").resolve()
