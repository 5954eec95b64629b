"""Starting a run from another's weights (train.init_from), and decoder fine-tuning
(train.trainable=decoder): every image keeps its codes, the run inherits the entropy models, the
picture gets better, resume still equals uninterrupted, and mismatches are refused clearly."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vqkit.cli import main
from vqkit.codec import (
    CodecError,
    carry_entropy_models,
    compress_images,
    decode_codes,
    decompress,
    parse,
)
from vqkit.codec.container import CRC_BYTES, FILE_CRC_AT, FINGERPRINT_BYTES, MAGIC
from vqkit.config import ConfigError
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.runs import Run, RunError, model_fingerprint

from .conftest import decoder_only, smooth_images, tiny_run_config
from .test_prior_cli import TINY_PRIOR
from .test_training import losses


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, run): a briefly trained tiny VQ-VAE with its static table and a trained prior."""
    root = tmp_path_factory.mktemp("finetune")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(96))
    run = root / "source"
    train(tiny_run_config(str(data), max_steps=40), run, progress=False)  # codes worth decoding well
    assert main(["prior", "train", str(run), "--max-steps", "10", "--no-progress", *TINY_PRIOR]) == 0
    return data, run


@pytest.fixture(scope="module")
def tuned(source: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, run = source
    out = tmp_path_factory.mktemp("tuned") / "run"
    train(decoder_only(tiny_run_config(str(data)), run, max_steps=80, lr=1e-2), out, progress=False)
    return out


def test_decoder_finetune_changes_the_decoder_alone(source: tuple[Path, Path], tuned: Path) -> None:
    before, after = load_file(source[1] / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        if not key.startswith("decoder."):  # encoder, codebook, EMA statistics, restart counters
            assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


def test_decoder_finetune_keeps_codes_and_sharpens_pictures(source: tuple[Path, Path], tuned: Path) -> None:
    images = list(smooth_images(96))
    old, new = Run.load(source[1]), Run.load(tuned)
    for a, b in zip(old.encode(images), new.encode(images), strict=True):
        np.testing.assert_array_equal(a, b)
    target = np.stack(images).astype(np.float64)
    mse = [
        float(np.mean((np.stack(r.reconstruct(images)).astype(np.float64) - target) ** 2)) for r in (old, new)
    ]
    assert mse[1] < 0.9 * mse[0], mse
    # The loss is the reconstruction term alone: no commitment term for codes that cannot move.
    rows = [json.loads(ln) for ln in (tuned / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["type"] == "train"]
    assert train_rows and all(r["loss"] == pytest.approx(r["mse"], rel=1e-6) for r in train_rows)


def test_entropy_models_are_carried_and_restamped(source: tuple[Path, Path], tuned: Path) -> None:
    run = source[1]
    old_static = json.loads((run / "entropy_static.json").read_text())
    new_static = json.loads((tuned / "entropy_static.json").read_text())
    assert new_static["counts"] == old_static["counts"]
    assert new_static["model_fingerprint"] == model_fingerprint(tuned) != model_fingerprint(run)
    assert new_static["carried_from"]["model_fingerprint"] == model_fingerprint(run)
    doc = json.loads((tuned / "prior_config.json").read_text())
    assert doc["model_fingerprint"] == model_fingerprint(tuned)
    assert doc["carried_from"]["argv"] == json.loads((run / "prior_config.json").read_text())["argv"]
    assert (tuned / "prior_eval.json").read_bytes() == (run / "prior_eval.json").read_bytes()


@pytest.mark.parametrize("entropy_model", ["prior", "static"])
def test_files_differ_by_the_fingerprint_alone(
    source: tuple[Path, Path], tuned: Path, entropy_model: str
) -> None:
    """Same codes, same tables: the two runs write the same payload bytes; only the model's
    fingerprint in the header differs, so each file still needs the run that wrote it."""
    images = list(smooth_images(5, size=24, seed=7))
    old, new = (
        compress_images(r, images, entropy_model=entropy_model, archive=True, quality=False).files[0]
        for r in (source[1], tuned)
    )
    # magic, version, entropy model id, the file checksum (format 5), then the fingerprint
    check = slice(FILE_CRC_AT, FILE_CRC_AT + CRC_BYTES)
    assert check.start == len(MAGIC) + 2
    fp = slice(check.stop, check.stop + FINGERPRINT_BYTES)
    assert old[fp] != new[fp]
    assert old[check] != new[check]  # the file checksum covers the fingerprint, so it differs too
    assert parse(old).payload_offset == parse(new).payload_offset
    rest = [f[: check.start] + f[fp.stop :] for f in (old, new)]
    assert rest[0] == rest[1]
    pictures = decompress(tuned, new)
    assert [p.shape for p in pictures] == [i.shape for i in images]
    with pytest.raises(CodecError, match="another model"):
        decompress(tuned, old)


def test_decoder_finetune_resume_equals_uninterrupted(source: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = source
    cfg = decoder_only(tiny_run_config(str(data), log_every=1), run)
    whole = tmp_path / "whole"
    train(cfg, whole, progress=False)

    def ctrl_c_at_5(step: int, model: VQVAE) -> None:
        if step == 5:
            signal.raise_signal(signal.SIGINT)

    parts = tmp_path / "parts"
    assert train(cfg, parts, progress=False, on_step=ctrl_c_at_5).stopped == "interrupted"
    assert not (parts / "prior.safetensors").exists()  # carried when the run finishes
    assert train(cfg, parts, resume=True, progress=False).stopped == "finished"
    for (sa, la), (sb, lb) in zip(losses(whole), losses(parts), strict=True):
        assert sa == sb and la == pytest.approx(lb, rel=1e-5, abs=1e-7)
    wa, wb = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)
    assert (parts / "prior.safetensors").is_file()


def test_warm_start_begins_where_the_source_ended(source: tuple[Path, Path], tmp_path: Path) -> None:
    """init_from with everything trainable starts from the source's weights (one step at a negligible
    learning rate leaves the networks where the source left them; a cold start is elsewhere), and
    the codes may move, so the run fits its own static table and has no prior."""
    data, run = source
    base = tiny_run_config(str(data), max_steps=1, lr=1e-12)
    warm = dataclasses.replace(base, train=dataclasses.replace(base.train, init_from=str(run)))
    for name, cfg in (("cold", base), ("warm", warm)):
        train(cfg, tmp_path / name, progress=False)
    start = load_file(run / "model.safetensors")
    cold, warmed = (load_file(tmp_path / name / "model.safetensors") for name in ("cold", "warm"))
    networks = [k for k in start if k.startswith(("encoder.", "decoder."))]
    for key in networks:
        torch.testing.assert_close(warmed[key], start[key], rtol=0, atol=1e-8, msg=key)
    assert not all(torch.allclose(cold[k], start[k]) for k in networks)
    static = json.loads((tmp_path / "warm" / "entropy_static.json").read_text())
    assert "carried_from" not in static and not (tmp_path / "warm" / "prior.safetensors").exists()


def test_mismatches_are_refused(source: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = source
    cfg = tiny_run_config(str(data))
    with pytest.raises(ConfigError, match=r"needs train\.init_from"):
        dataclasses.replace(cfg.train, trainable="decoder")
    with pytest.raises(ConfigError, match="trainable must be"):
        dataclasses.replace(cfg.train, trainable="encoder")
    other = dataclasses.replace(cfg.model, res_blocks=2)
    with pytest.raises(ConfigError, match=r"differs at model\.res_blocks"):
        train(decoder_only(dataclasses.replace(cfg, model=other), run), tmp_path / "a", progress=False)
    with pytest.raises(RunError, match="own folder"):
        train(decoder_only(cfg, run), run, progress=False)
    with pytest.raises(RunError):
        train(decoder_only(cfg, tmp_path / "missing"), tmp_path / "b", progress=False)


def test_carry_refuses_a_run_with_other_codes(source: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = source
    other = tmp_path / "other"
    train(tiny_run_config(str(data), max_steps=3, seed=1), other, progress=False)
    with pytest.raises(RunError, match="does not compute the codes"):
        carry_entropy_models(run, other)


def test_cli_decoder_only(
    source: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run = source
    out = tmp_path / "tuned"
    tiny = ["--set", "data.image_size=16", "--set", "train.batch_size=16", "--set", "train.precision=fp32"]
    argv = ["train", "--init-from", str(run), "--decoder-only", "--data", str(data), "--out", str(out),
            "--max-steps", "3", "--no-progress", *tiny]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["train"]["init_from"] == str(run) and saved["train"]["trainable"] == "decoder"
    assert saved["model"] == json.loads((run / "config.json").read_text())["config"]["model"]
    assert (out / "prior.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", "--decoder-only", "--data", str(data), "--out", str(tmp_path / "x")]) == 1
    assert "--decoder-only needs --init-from" in capsys.readouterr().err
    bad = ["train", "--init-from", str(run), "--set", "model.res_blocks=3", "--data", str(data),
           "--out", str(tmp_path / "y"), "--max-steps", "1", "--no-progress", *tiny]  # fmt: skip
    assert main(bad) == 1
    assert "model.res_blocks" in capsys.readouterr().err


def test_cli_prior_carry_after_the_fact(
    source: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fine-tune that began before its source had a prior gets it later with `vqkit prior carry`;
    the fine-tuned run then writes prior files (entropy id 3) that decode to the codes it encoded."""
    data, run = source
    bare = tmp_path / "bare"  # the source as it was before its prior was trained
    bare.mkdir()
    for f in run.iterdir():
        if f.is_file() and not f.name.startswith("prior"):
            (bare / f.name).write_bytes(f.read_bytes())
    tuned = tmp_path / "tuned"
    train(decoder_only(tiny_run_config(str(data)), bare, max_steps=3), tuned, progress=False)
    assert not (tuned / "prior.safetensors").exists() and (tuned / "entropy_static.json").is_file()
    images = list(smooth_images(3, size=24, seed=5))
    with pytest.raises(RunError, match="no prior"):
        compress_images(tuned, images, entropy_model="prior", quality=False)
    capsys.readouterr()
    assert main(["prior", "carry", str(run), str(tuned)]) == 0
    assert "prior.safetensors" in capsys.readouterr().out
    doc = json.loads((tuned / "prior_config.json").read_text())
    assert doc["model_fingerprint"] == model_fingerprint(tuned)
    assert doc["carried_from"]["from"] == str(run)
    result = compress_images(tuned, images, entropy_model="prior", quality=False)
    assert all(f[len(MAGIC) + 1] == 3 for f in result.files)  # the prior in overlapping windows
    for f, codes in zip(result.files, result.grids, strict=True):
        np.testing.assert_array_equal(decode_codes(tuned, f)[1][0], codes)
        assert decompress(tuned, f)[0].shape == (24, 24, 3)
    # A second carry would replace the prior: refused without --overwrite; other codes refused.
    assert main(["prior", "carry", str(run), str(tuned)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prior", "carry", str(run), str(tuned), "--overwrite"]) == 0
    # Training the fine-tune's prior from the source's is refused (another model's codes, by the
    # fingerprint), and the message points to the carry.
    capsys.readouterr()
    argv = ["prior", "train", str(tuned), "--init-from", str(run), "--overwrite", "--max-steps", "1"]
    assert main([*argv, "--no-progress"]) == 1
    assert "vqkit prior carry" in capsys.readouterr().err
    assert (tuned / "prior.safetensors").is_file()  # refused before --overwrite removed anything
    other = tmp_path / "other"
    train(tiny_run_config(str(data), max_steps=2, seed=1), other, progress=False)
    capsys.readouterr()
    assert main(["prior", "carry", str(run), str(other)]) == 1
    err = capsys.readouterr().err
    assert "does not compute the codes" in err and "Traceback" not in err
    assert main(["prior", "carry", str(tmp_path / "nothing"), str(tuned)]) == 1
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["prior", "carry", str(bare / "config.json"), str(tuned)]) == 1  # a file, not a folder
    assert main(["prior", "carry", str(tuned), str(tuned), "--overwrite"]) == 1
    assert "name the fine-tuned run second" in capsys.readouterr().err
