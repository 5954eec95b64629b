"""Image-size rules shared by every command: tiny images are refused by one rule, huge ones by a
pixel limit (PIL's decompression-bomb guard as an error), and skipped files are named."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.data import DataError, ImageSet, load_dataset, read_image
from vqkit.data.datasets import MIN_IMAGE_SIDE, max_image_pixels, set_max_image_pixels
from vqkit.metrics import ssim_per_image


def save(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_a_tiny_image_file_is_refused_by_name(tmp_path: Path) -> None:
    path = save(tmp_path / "dot.png", 1, 1)
    with pytest.raises(DataError, match=rf"dot\.png.*1x1.*at least {MIN_IMAGE_SIDE}"):
        load_dataset(path)


def test_tiny_images_in_a_folder_are_skipped_and_named(tmp_path: Path) -> None:
    save(tmp_path / "a.png", 32, 32)
    save(tmp_path / "b.png", 3, 40)
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 .*b\.png"):
        data = load_dataset(tmp_path)
    assert data.names == ("a.png",) and data.skipped == ("b.png",)


def test_tiny_images_in_an_npz_are_skipped_and_named(tmp_path: Path) -> None:
    images = np.zeros((3, 2, 4, 3), np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images)
    with pytest.raises(DataError, match="at least"):
        load_dataset(tmp_path / "tiny.npz")


def test_ssim_never_divides_by_zero_on_small_images() -> None:
    a = np.zeros((2, 3, 3, 3), np.uint8)
    b = a.copy()
    b[0, 1, 1] = 255
    out = ssim_per_image(a, b)
    assert out[1] == pytest.approx(1.0) and 0 < out[0] < 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(ssim_per_image(np.zeros((1, 1, 1, 3), np.uint8), np.zeros((1, 1, 1, 3), np.uint8)))[0]


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """A 3000x3000 PNG of one colour is a few KB on disk and 27 MB decoded: with a limit of
    4 megapixels it is refused by its header alone, naming the limit and how to raise it."""
    path = tmp_path / "bomb.png"
    Image.new("RGB", (3000, 3000)).save(path, optimize=True)
    assert path.stat().st_size < 100_000
    previous = max_image_pixels()
    try:
        set_max_image_pixels(4_000_000)
        with pytest.raises(DataError, match=r"bomb\.png.*3000x3000.*--max-image-pixels"):
            read_image(path)
        set_max_image_pixels(10_000_000)
        assert read_image(path).shape == (3000, 3000, 3)
    finally:
        set_max_image_pixels(previous)


def test_the_default_limit_refuses_a_12000_square_image() -> None:
    assert 12_000 * 12_000 > max_image_pixels() >= 8_000 * 6_000  # a 48 MP camera photo still loads


def test_training_crops_name_the_images_too_small_for_the_crop() -> None:
    images = [np.zeros((40, 40, 3), np.uint8), np.zeros((20, 50, 3), np.uint8)]
    data = ImageSet(images, None, None, 3, "test", ("big", "small"))
    with pytest.warns(UserWarning, match=r"1 of 2 images .*smaller than the 32x32 .*small"):
        crops = data.patches(32)
    assert crops.shape == (1, 32, 32, 3)
