"""Tests for vqkit.data: every format on tiny generated files, plus transforms and splits."""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vqkit.data import (
    DataError,
    ImageSet,
    load_dataset,
    random_crop_flip,
    read_image,
    split_holdout,
    to_float,
    to_uint8_hwc,
)
from vqkit.data import builtin as builtin_module

CIFAR_VAL = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10/val"


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def _solid(value: int, size: tuple[int, int] = (4, 5)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


# ---- image folders -------------------------------------------------------------------------


def test_class_subfolders_give_sorted_class_names_and_matching_labels(tmp_path: Path) -> None:
    # Pixel value encodes the class so labels can be checked against content, not just counts.
    for cls, value in (("zebra", 200), ("ant", 10), ("moth", 100)):
        for i in range(3):
            _save(tmp_path / cls / f"{i}.png", _solid(value))
    _save(tmp_path / "moth" / "deeper" / "x.PNG", _solid(100))  # nested, upper-case extension
    ds = load_dataset(tmp_path)
    assert ds.class_names == ("ant", "moth", "zebra")
    assert ds.labels is not None and len(ds) == 10
    value_of = {0: 10, 1: 100, 2: 200}
    for img, label in zip(ds.images, ds.labels, strict=True):
        assert img[0, 0, 0] == value_of[int(label)]
    assert "moth/deeper/x.PNG" in ds.names
    assert list(ds.names) == sorted(ds.names)  # deterministic order


def test_flat_and_mixed_folders_have_no_labels(tmp_path: Path) -> None:
    _save(tmp_path / "b.png", _solid(1))
    _save(tmp_path / "a.jpg", _solid(2))
    _save(tmp_path / "sub" / "c.bmp", _solid(3))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path)
    assert ds.labels is None and ds.class_names is None
    assert ds.names == ("a.jpg", "b.png", "sub/c.bmp")
    assert ds.images[2][0, 0, 0] == 3


def test_corrupt_file_is_skipped_reported_and_rest_load(tmp_path: Path) -> None:
    for i in range(4):
        _save(tmp_path / f"{i}.png", _solid(i * 10))
    (tmp_path / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(UserWarning, match=r"skipped 1 of 4 .*2\.png"):
        ds = load_dataset(tmp_path)
    assert ds.skipped == ("2.png",)
    assert ds.names == ("0.png", "1.png", "3.png")
    assert [int(img[0, 0, 0]) for img in ds.images] == [0, 10, 30]


def test_empty_or_all_corrupt_folder_and_missing_path_raise(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path / "bad")
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DataError, match="does-not-exist"):
        load_dataset(missing)
    with pytest.raises(DataError, match="CIFAR or MNIST"):
        load_dataset(f"{tmp_path / 'empty'}:test")


def test_max_images_keeps_first_in_sorted_order(tmp_path: Path) -> None:
    for i in range(5):
        _save(tmp_path / f"{i}.png", _solid(i))
    ds = load_dataset(tmp_path, max_images=2)
    assert ds.names == ("0.png", "1.png")


# ---- channels and read_image ---------------------------------------------------------------


def test_read_image_keeps_mode_channels(tmp_path: Path) -> None:
    rgba = np.arange(4 * 5 * 4, dtype=np.uint8).reshape(4, 5, 4)
    _save(tmp_path / "rgba.png", rgba)
    _save(tmp_path / "la.png", rgba[:, :, :2], mode="LA")
    _save(tmp_path / "l.png", rgba[:, :, 0])
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "la.png"), rgba[:, :, :2])
    assert read_image(tmp_path / "l.png").shape == (4, 5, 1)
    wide = np.tile(np.array([[0, 65535, 257 * 128]], dtype=np.uint16), (4, 2))  # 4x6: above the minimum
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert read_image(tmp_path / "wide.png")[0, :3, 0].tolist() == [0, 255, 128]
    with pytest.raises(DataError, match="cannot decode"):
        (tmp_path / "x.png").write_bytes(b"")
        read_image(tmp_path / "x.png")


def test_channel_inference_and_conversion(tmp_path: Path) -> None:
    grey = np.tile(np.array([[0, 77, 255]], np.uint8), (4, 2))  # images need 4 pixels a side
    _save(tmp_path / "g" / "a.png", grey)
    ds = load_dataset(tmp_path / "g")
    assert ds.channels == 1 and ds.images[0][:, :, 0].tolist() == grey.tolist()
    rgb = load_dataset(tmp_path / "g", channels=3)
    assert np.array_equal(rgb.images[0], np.repeat(grey[:, :, None], 3, axis=2))
    # BT.601: 0.299*200 + 0.587*100 + 0.114*50 = 124.2 -> 124; pure green 255 -> 149.685 -> 150.
    colour = np.tile(np.array([[[200, 100, 50], [0, 255, 0]]], np.uint8), (4, 2, 1))
    _save(tmp_path / "c" / "a.png", colour)
    _save(tmp_path / "c" / "b.png", grey)  # mixed grey + RGB infers 3 channels
    assert load_dataset(tmp_path / "c").channels == 3
    luma = load_dataset(tmp_path / "c", channels=1).images[0][0, :, 0].tolist()
    assert luma == [124, 150, 124, 150]
    alpha = np.dstack([colour, np.full((4, 4), 9, np.uint8)])
    _save(tmp_path / "a" / "x.png", alpha)
    assert np.array_equal(load_dataset(tmp_path / "a").images[0], colour)  # alpha dropped


# ---- CIFAR python batches ------------------------------------------------------------------


def _cifar_batch(n: int, offset: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(offset + i) % 10 for i in range(n)]


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches_load_in_hwc_order_with_splits(tmp_path: Path, protocol: int) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = {}
    for name, n, off in (("data_batch_1", 3, 0), ("data_batch_2", 2, 3), ("test_batch", 2, 7)):
        data, labels = _cifar_batch(n, off)
        batches[name] = data
        with (root / name).open("wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"data": data, b"labels": labels},
                f,
                protocol=protocol,
            )
    names = [f"c{i}".encode() for i in range(10)]
    with (root / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)

    ds = load_dataset(tmp_path)  # the parent folder: the subfolder is found
    assert len(ds) == 5 and ds.uniform_size == (32, 32) and ds.channels == 3
    assert ds.labels is not None and ds.labels.tolist() == [0, 1, 2, 3, 4]
    assert ds.class_names == tuple(f"c{i}" for i in range(10))
    # CHW rows: red plane, then green, blue; pixel (y, x) of channel c is at c*1024 + y*32 + x.
    row = batches["data_batch_2"][1]
    img = ds.images[4]
    assert ds.names[4] == "data_batch_2[1]"
    for y, x in ((0, 0), (5, 17), (31, 31)):
        assert img[y, x].tolist() == [row[c * 1024 + y * 32 + x] for c in range(3)]
    test = load_dataset(f"{tmp_path}:test")
    assert len(test) == 2 and test.labels is not None and test.labels.tolist() == [7, 8]
    assert len(load_dataset(f"{root}:train", max_images=4)) == 4


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    data, _ = _cifar_batch(4, 0)
    with (tmp_path / "train").open("wb") as f:
        pickle.dump({b"data": data, b"fine_labels": [5, 0, 99, 1], b"coarse_labels": [0] * 4}, f)
    with (tmp_path / "meta").open("wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, f)
    ds = load_dataset(tmp_path)
    assert ds.labels is not None and ds.labels.tolist() == [5, 0, 99, 1]
    assert ds.class_names is not None and ds.class_names[99] == "f99"


def test_python2_style_cifar_pickle_loads(tmp_path: Path) -> None:
    # The official files were written by Python 2 cPickle: array bytes and keys are py2 str
    # (SHORT_BINSTRING 'U' / BINSTRING 'T'), numpy is named numpy.core.multiarray. Hand-built here.
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    data = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
        b"(K\x01(J\x02\x00\x00\x00J\x00\x0c\x00\x00t"  # state: version 1, shape (2, 3072)
        b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<i", data.size) + data.tobytes() + b"tb"
    )
    blob = b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](K\x03K\x07eu."
    (tmp_path / "data_batch_1").write_bytes(blob)
    ds = load_dataset(tmp_path)
    assert ds.labels is not None and ds.labels.tolist() == [3, 7]
    assert ds.images[1][0, 1].tolist() == [data[1, c * 1024 + 1] for c in range(3)]


class _Exploit:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = (
        _Exploit(os.system, f"touch {marker}")
        if kind == "os.system"
        else _Exploit(eval, f"open({str(marker)!r}, 'w').write('x')")
    )
    with (tmp_path / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": payload, b"labels": [0]}, f)
    with pytest.raises(DataError, match="refused"):
        load_dataset(tmp_path)
    assert not marker.exists()


def test_corrupt_cifar_batch_raises(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset(tmp_path)


# ---- MNIST IDX -----------------------------------------------------------------------------


def _write_idx(path: Path, arr: np.ndarray, compress: bool) -> None:
    body = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(body) if compress else body)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    ext = ".gz" if compress else ""
    rng = np.random.default_rng(1)
    train, test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (3, 2))
    _write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", train, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", np.array([5, 0, 4]), compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", test, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", np.array([7, 2]), compress)
    ds = load_dataset(tmp_path)
    assert ds.channels == 1 and np.array_equal(ds.as_array()[..., 0], train)
    assert ds.labels is not None and ds.labels.tolist() == [5, 0, 4]
    ds_test = load_dataset(f"{tmp_path}:test")
    assert np.array_equal(ds_test.as_array()[..., 0], test)
    assert load_dataset(tmp_path, channels=3).as_array().shape == (3, 28, 28, 3)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_or_foreign_idx_raises(tmp_path: Path, compress: bool) -> None:
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    good = struct.pack(">HBB3I", 0, 0x08, 3, 10, 28, 28) + bytes(28 * 28 * 10)
    cut = good[: len(good) - 100]
    (tmp_path / name).write_bytes(gzip.compress(cut) if compress else cut)
    with pytest.raises(DataError, match="truncated"):
        load_dataset(tmp_path)
    bad = b"\x12\x34" + good[2:]
    (tmp_path / name).write_bytes(gzip.compress(bad) if compress else bad)
    with pytest.raises(DataError, match="not an IDX"):
        load_dataset(tmp_path)


# ---- npz and single files ------------------------------------------------------------------


def test_npz_with_and_without_labels(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 6, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([1, 0, 1, 2]))
    ds = load_dataset(tmp_path / "a.npz")
    assert np.array_equal(ds.as_array(), images)
    assert ds.labels is not None and ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 1, 2]
    np.savez(tmp_path / "g.npz", images=images[..., 0])  # N x H x W grey, no labels
    grey = load_dataset(tmp_path / "g.npz")
    assert grey.labels is None and grey.channels == 1 and grey.as_array().shape == (4, 6, 7, 1)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "must be uint8"),
        ({"pixels": np.zeros((2, 4, 4, 3), np.uint8)}, "no 'images'"),
        ({"images": np.zeros((2, 3, 8, 8), np.uint8)}, "channels last"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(3, np.int64)}, "labels"),
    ],
)
def test_npz_validation(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "bad.npz")


def test_single_image_file(tmp_path: Path) -> None:
    _save(tmp_path / "one.webp", _solid(42, (9, 11)))
    ds = load_dataset(tmp_path / "one.webp")
    assert len(ds) == 1 and ds.names == ("one.webp",) and ds.uniform_size == (9, 11)


# ---- ImageSet ------------------------------------------------------------------------------


def test_imageset_mixed_sizes_subset_and_patches() -> None:
    imgs = [np.full((64, 96, 3), i, np.uint8) for i in range(2)] + [np.zeros((32, 32, 3), np.uint8)]
    imgs.append(np.zeros((16, 40, 3), np.uint8))  # too small for 32-pixel patches
    ds = ImageSet(imgs, np.arange(4, dtype=np.int64), None, 3, "test", ("a", "b", "c", "d"))
    assert ds.uniform_size is None
    with pytest.raises(DataError, match="differ in size"):
        ds.as_array()
    with pytest.warns(UserWarning, match="1 of 4 images .* left out: d"):
        tiles = ds.patches(32)
    assert tiles.shape == (2 * 6 + 1, 32, 32, 3)  # 2x3 tiles per large image, the 32x32 as-is
    assert (tiles[:6] == 0).all() and (tiles[6:12] == 1).all()
    with pytest.warns(UserWarning, match="left out"):
        random = ds.patches(32, per_image=5, seed=3)
        assert random.shape == (11, 32, 32, 3)
        assert np.array_equal(random, ds.patches(32, per_image=5, seed=3))
    sub = ds.subset([2, 0])
    assert sub.names == ("c", "a") and sub.labels is not None and sub.labels.tolist() == [2, 0]
    with pytest.raises(DataError):
        ImageSet([np.zeros((2, 2, 3), np.uint8)], None, None, 1, "bad", ("x",))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 300), fraction=st.floats(0.0, 0.95), seed=st.integers(0, 2**31))
def test_split_holdout_disjoint_covering_deterministic(n: int, fraction: float, seed: int) -> None:
    train, hold = split_holdout(n, fraction, seed)
    assert np.intersect1d(train, hold).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, hold])), np.arange(n))
    assert n == 0 or len(train) >= 1
    assert abs(len(hold) - n * fraction) <= 1
    again = split_holdout(n, fraction, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(hold, again[1])


# ---- builtin -------------------------------------------------------------------------------


def test_builtin_is_offline_deterministic_natural_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("builtin dataset tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    builtin_module._crops.cache_clear()
    first = load_dataset("builtin").as_array()
    builtin_module._crops.cache_clear()  # regenerate, so determinism is of generation, not cache
    second = load_dataset("builtin")
    assert first.shape[1:] == (32, 32, 3) and first.shape[0] > 1000
    assert np.array_equal(first, second.as_array())
    assert second.labels is not None and second.class_names is not None
    assert set(np.unique(second.labels)) == set(range(len(second.class_names)))
    assert 40 < first.std() < 100  # natural photos, neither flat nor noise
    with pytest.raises(ValueError):
        second.images[0][0, 0, 0] = 1  # cached pixels are read-only
    assert load_dataset("builtin", channels=1, max_images=10).as_array().shape == (10, 32, 32, 1)


# ---- transforms ----------------------------------------------------------------------------


def test_float_uint8_round_trip_is_exact() -> None:
    batch = torch.randint(0, 256, (3, 5, 6, 3), dtype=torch.uint8)
    images = to_float(batch)
    assert images.shape == (3, 3, 5, 6) and images.dtype == torch.float32
    assert np.array_equal(to_uint8_hwc(images), batch.numpy())
    extreme = torch.tensor([-1.0, 0.5 / 255, 1.6 / 255, 2.0, float("nan")]).view(1, 1, 1, 5)
    assert to_uint8_hwc(extreme).ravel().tolist() == [0, 0, 2, 255, 0]
    before = extreme.clone()
    to_uint8_hwc(extreme)  # converts in place on its own copy: the caller's tensor is untouched
    assert torch.equal(extreme.nan_to_num(), before.nan_to_num()) and extreme.isnan().sum() == 1
    half = to_float(batch).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert np.array_equal(to_uint8_hwc(half), to_uint8_hwc(half.float()))  # bf16 and layouts alike


def _coordinate_batch(b: int, h: int, w: int) -> torch.Tensor:
    # Channel 0 holds each pixel's row, channel 1 its column: crops reveal where they came from.
    rows = torch.arange(h).view(1, h, 1).expand(b, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(b, h, w)
    return torch.stack([rows, cols], dim=1).float()


def test_random_crop_flip_is_a_crop_and_reproducible() -> None:
    batch = _coordinate_batch(16, 12, 10)
    out = random_crop_flip(batch, 6, torch.Generator().manual_seed(7))
    again = random_crop_flip(batch, 6, torch.Generator().manual_seed(7))
    assert out.shape == (16, 2, 6, 6) and torch.equal(out, again)
    flipped = 0
    for crop in out:
        rows, cols = crop[0], crop[1]
        assert torch.equal(rows - rows[0, 0], torch.arange(6.0).view(6, 1).expand(6, 6))
        step = cols[0, 1] - cols[0, 0]
        assert step in (1, -1)  # contiguous columns, mirrored when flipped
        assert torch.equal(cols - cols[:, :1], step * torch.arange(6.0).expand(6, 6))
        flipped += int(step == -1)
    assert 0 < flipped < 16  # both outcomes happen (probability of failure 2 * 2**-16)


def test_random_crop_flip_identity_and_padding() -> None:
    batch = torch.rand(4, 3, 8, 8)
    same = random_crop_flip(batch, 8, torch.Generator().manual_seed(0), flip=False)
    assert torch.equal(same, batch)
    padded = random_crop_flip(_coordinate_batch(32, 8, 8), 8, torch.Generator(), flip=False, pad=2)
    # Reflect padding maps coordinate -k to k and 7+k to 7-k, so values stay within the image.
    assert padded.min() >= 0 and padded.max() <= 7 and padded.shape == (32, 2, 8, 8)
    with pytest.raises(ValueError):
        random_crop_flip(batch, 9, torch.Generator())


# ---- the real CIFAR-10 validation folder, when present --------------------------------------


@pytest.mark.skipif(not CIFAR_VAL.is_dir(), reason="shared CIFAR-10 val folder not present")
def test_cifar10_val_folder_official_pixels() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file in the lossless set may be skipped
        ds = load_dataset(CIFAR_VAL)
    assert len(ds) == 4000 and ds.class_names is not None and len(ds.class_names) == 10
    frog = ds.names.index("frog/00000.webp")
    assert ds.labels is not None and ds.class_names[ds.labels[frog]] == "frog"
    assert ds.images[frog][0, :3, 0].tolist() == [59, 43, 50]  # README: official image 0
