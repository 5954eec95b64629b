"""Hostile inputs and outputs at the command line: one clear line, never a traceback; one bad
image never stops a whole compress job unless --strict asks for that."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.codec import parse

from .golden.make_golden import blob_images, build_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("errors") / "run")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two good images and one that does not decode."""
    root = tmp_path / "images"
    root.mkdir()
    for i, img in enumerate(blob_images(2, (16, 16), 3)):
        Image.fromarray(img).save(root / f"good{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("vqkit: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_compress_skips_and_names_a_bad_file(
    run: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["compress", str(run), str(folder), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good0.vqk", "good1.vqk"]
    assert all(len(parse(p.read_bytes()).records) == 1 for p in out.iterdir())
    assert "broken.png" in capsys.readouterr().err


def test_compress_strict_stops_at_a_bad_file(
    run: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compress", str(run), str(folder), "-o", str(tmp_path / "out"), "--strict"]) == 1
    assert "broken.png" in one_line_error(capsys)


def test_a_tiny_image_is_one_clear_error_for_eval_and_compress(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dot = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(dot)
    assert main(["compress", str(run), str(dot), "-o", str(tmp_path / "out")]) == 1
    assert "dot.png" in one_line_error(capsys)
    assert main(["eval", str(run), "--data", str(dot)]) == 1
    assert "dot.png" in one_line_error(capsys)


@pytest.mark.parametrize("where", ["existing_file", "under_a_file"])
def test_output_paths_that_cannot_be_folders(
    run: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "existing_file" else blocker / "sub"
    assert main(["compress", str(run), str(folder / "good0.png"), "-o", str(out)]) == 1
    assert str(blocker) in one_line_error(capsys)
    assert blocker.read_text() == "a file, not a folder"


def test_a_read_only_filesystem_is_one_line(
    run: Path,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tests run as root, where permission bits do not stop writes: the read-only filesystem is
    simulated where every vqkit write starts (the temporary file beside the target)."""

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("vqkit.runs.files.tempfile.mkstemp", read_only)
    assert main(["compress", str(run), str(folder / "good0.png"), "-o", str(tmp_path / "out")]) == 1
    assert "Read-only file system" in one_line_error(capsys)


def test_the_pixel_limit_is_one_option_of_every_command(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-image-pixels lowers (or raises) the limit for any command, before or after its name."""
    from vqkit.data.datasets import max_image_pixels, set_max_image_pixels

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big)
    before = max_image_pixels()
    try:
        assert (
            main(["compress", str(run), str(big), "-o", str(tmp_path / "o"), "--max-image-pixels", "1000"])
            == 1
        )
        assert "--max-image-pixels" in one_line_error(capsys)
        assert (
            main(["--max-image-pixels=5000", "compress", str(run), str(big), "-o", str(tmp_path / "o")]) == 0
        )
        assert main(["--max-image-pixels", "lots", "eval", str(run), "--data", str(big)]) == 2
        assert "whole number" in capsys.readouterr().err
    finally:
        set_max_image_pixels(before)


def test_a_picture_is_png_whatever_its_name(run: Path, tmp_path: Path) -> None:
    """-o without an extension (or with another one) still writes a PNG, never a Pillow traceback."""
    image = tmp_path / "in.png"
    Image.fromarray(blob_images(1, (16, 16), 4)[0]).save(image)
    for name in ("grid", "grid.picture"):
        assert main(["reconstruct", str(run), str(image), "-o", str(tmp_path / name)]) == 0
        assert Image.open(tmp_path / name).format == "PNG"
