"""compress -> decompress through the Python API and the command line, on a tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.codec import (
    FORMAT_VERSION,
    STATIC_TABLE_FILE,
    CodecError,
    Coding,
    compress_images,
    decode_codes,
    decompress,
    fit_static_model,
    parse,
)
from vqkit.codec.api import coded_size, resample
from vqkit.codec.fitting import as_model_inputs
from vqkit.runs import RunError

from .golden.make_golden import blob_images, build_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("codec") / "run")


@pytest.fixture(scope="module")
def coding(run: Path) -> Coding:
    return Coding(run)


def mixed_images() -> list[np.ndarray]:
    """RGB, grey, grey + alpha and RGBA images of sizes that are not multiples of the grid."""
    rgb = blob_images(2, (13, 7), 1)
    grey = blob_images(1, (9, 18), 2, channels=1)
    la = [np.concatenate([grey[0], blob_images(1, (9, 18), 3, channels=1)[0]], axis=2)]
    rgba = [np.concatenate([blob_images(1, (32, 32), 4)[0], blob_images(1, (32, 32), 5, 1)[0]], axis=2)]
    return [*rgb, *grey, *la, *rgba]


@pytest.mark.parametrize("entropy_model", ["raw", "static"])
@pytest.mark.parametrize("archive", [True, False])
def test_round_trip_restores_codes_sizes_modes_and_alpha(
    coding: Coding, entropy_model: str, archive: bool
) -> None:
    images = mixed_images()
    result = compress_images(coding, images, entropy_model=entropy_model, archive=archive)
    assert len(result.files) == (1 if archive else len(images))
    want = coding.run.encode(as_model_inputs(images, 3))
    got = [g for f in result.files for g in decode_codes(coding, f)[1]]
    out = [im for f in result.files for im in decompress(coding, f)]
    recon = coding.run.decode(want[-1][None], (32, 32))[0]
    for image, back, g, w in zip(images, out, got, want, strict=True):
        np.testing.assert_array_equal(g, w)  # codes are bit-exact
        assert back.shape == image.shape and back.dtype == np.uint8
        if image.shape[2] in (2, 4):
            np.testing.assert_array_equal(back[:, :, -1], image[:, :, -1])  # alpha is lossless
    np.testing.assert_array_equal(out[-1][:, :, :3], recon)
    assert [r.mode for r in result.reports] == ["RGB", "RGB", "L", "LA", "RGBA"]


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_a_scaled_image_is_coded_at_its_coded_size_and_restored_to_its_own(
    coding: Coding, scale: float
) -> None:
    images = mixed_images()
    result = compress_images(coding, images, entropy_model="static", archive=True, scale=scale)
    container, grids = decode_codes(coding, result.files[0])
    out = decompress(coding, result.files[0])
    assert container.version == FORMAT_VERSION
    for image, rec, grid, back, report in zip(
        images, container.records, grids, out, result.reports, strict=True
    ):
        size = coded_size(*image.shape[:2], scale)
        assert rec.coded_size == size and grid.shape == coding.grid_shape(*size) == report.grid
        # the codes are those of the resampled image, and decoding resamples their picture back
        want = coding.run.encode(
            as_model_inputs([resample(image[:, :, : rec.mode.color_channels], size)], 3)
        )[0]
        np.testing.assert_array_equal(grid, want)
        picture = resample(coding.run.decode(grid[None], size)[0], image.shape[:2])
        assert back.shape == image.shape
        if rec.mode.name == "RGB":
            np.testing.assert_array_equal(back, picture)
        if image.shape[2] in (2, 4):
            np.testing.assert_array_equal(back[:, :, -1], image[:, :, -1])  # alpha stays at full size
        assert report.bpp_nominal == pytest.approx(
            4 * grid.size / (image.shape[0] * image.shape[1])
        )  # per original pixel


def test_scale_one_writes_the_unscaled_file_and_bad_scales_are_refused(coding: Coding) -> None:
    images = mixed_images()
    assert compress_images(coding, images, scale=1.0).files == compress_images(coding, images).files
    assert parse(compress_images(coding, images, scale=1.0).files[0]).version == FORMAT_VERSION
    for bad in (0.0, 0.2, 5.0):
        with pytest.raises(ValueError, match="scale"):
            compress_images(coding, images, scale=bad)


def test_report_has_the_three_rates_and_quality(coding: Coding) -> None:
    result = compress_images(coding, blob_images(4, (32, 32), 6))
    for r in result.reports:
        assert r.bpp_nominal == pytest.approx(4 * 64 / 1024)  # log2(16) bits x 8x8 codes
        assert r.bpp_estimated > 0 and r.bpp_actual == pytest.approx(8 * len(result.files[r.index]) / 1024)
        assert 5 < r.psnr < 100 and -1 <= r.ssim <= 1
    json.dumps(result.to_json())


def test_single_32x32_image_header_is_19_bytes(coding: Coding) -> None:
    """15 bytes of fields (magic, version, model, fingerprint, count, height, width, mode, length; no
    stage count for one stage) and one CRC-32 over the rest of the file."""
    result = compress_images(coding, blob_images(1, (32, 32), 7), entropy_model="static")
    assert result.header_bytes == 19 == parse(result.files[0]).header_bytes
    assert parse(result.files[0]).records[0].stages == 1


@pytest.mark.parametrize("archive", [True, False])
def test_estimated_and_actual_payload_bits_agree_within_one_percent(coding: Coding, archive: bool) -> None:
    images = blob_images(24, (64, 64), 8)  # 16x16 codes each
    summary = compress_images(
        coding, images, entropy_model="static", archive=archive, quality=False
    ).summary()
    assert abs(summary["codes_overhead"]) < 0.01, summary


def test_auto_picks_static_then_raw(run: Path, tmp_path: Path) -> None:
    images = blob_images(2, (16, 16), 9)
    assert compress_images(run, images, quality=False).entropy_model == "static"
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    (bare / STATIC_TABLE_FILE).unlink()
    assert compress_images(bare, images, quality=False).entropy_model == "raw"
    with pytest.raises(RunError, match="--fit-static"):
        compress_images(bare, images, entropy_model="static")


def test_auto_keeps_the_smallest_payload(run: Path, tmp_path: Path) -> None:
    skewed = tmp_path / "skewed"
    shutil.copytree(run, skewed)
    doc = json.loads((skewed / STATIC_TABLE_FILE).read_text())
    doc["counts"] = [10**9] + [0] * 15  # a table that makes every code but 0 expensive
    (skewed / STATIC_TABLE_FILE).write_text(json.dumps(doc))
    images = blob_images(8, (16, 16), 16)
    auto = compress_images(skewed, images, quality=False)
    raw = compress_images(skewed, images, entropy_model="raw", quality=False)
    static = compress_images(skewed, images, entropy_model="static", quality=False)
    assert auto.entropy_model == "raw" and auto.files == raw.files
    assert sum(map(len, static.files)) > sum(map(len, raw.files))


def test_refitting_the_static_model_refuses_old_files(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    data = compress_images(copy, blob_images(2, (16, 16), 10), archive=True).files[0]
    path = fit_static_model(copy, blob_images(8, (16, 16), 11))
    assert json.loads(path.read_text())["codes"] == 8 * 16
    with pytest.raises(CodecError, match="another model"):
        decompress(copy, data)


def test_a_grey_model_refuses_colour_and_keeps_grey(tmp_path: Path) -> None:
    grey_run = build_tiny_run(tmp_path / "grey", channels=1, static=False)
    with pytest.raises(CodecError, match="convert it to grey"):
        compress_images(grey_run, blob_images(1, (16, 16), 12))
    grey = blob_images(1, (16, 16), 13, channels=1)
    (back,) = decompress(grey_run, compress_images(grey_run, grey).files[0])
    assert back.shape == (16, 16, 1)


# ---- command line --------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    images = mixed_images()
    for name, image in zip(["a.png", "b.png", "grey.png", "sub/la.png", "sub/rgba.png"], images, strict=True):
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(folder / name)
    return folder


def decompress_restores_modes_and_sizes(run: Path, files: list[Path], image_folder: Path, pngs: Path) -> None:
    """`vqkit decompress` of image_folder's .vqk files gives PNGs of the originals' modes and sizes."""
    assert main(["decompress", *map(str, files), "-o", str(pngs), "--run", str(run)]) == 0
    for f in files:
        original = Image.open(image_folder / (f.stem.replace("sub_", "sub/") + ".png"))
        back = Image.open(pngs / f"{f.stem}.png")
        assert (back.mode, back.size) == (original.mode, original.size)


def test_cli_compress_folder_then_decompress(run: Path, image_folder: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "vqk", tmp_path / "report.json"
    assert main(["compress", str(run), str(image_folder), "-o", str(out), "--json", str(report)]) == 0
    files = sorted(out.glob("*.vqk"))
    assert [f.stem for f in files] == ["a", "b", "grey", "sub_la", "sub_rgba"]
    doc = json.loads(report.read_text())
    assert doc["summary"]["images"] == 5 and doc["summary"]["entropy_model"] == "static"
    assert {"bpp_nominal", "bpp_estimated", "bpp_actual", "psnr", "ssim"} <= set(doc["images"][0])
    decompress_restores_modes_and_sizes(run, files, image_folder, tmp_path / "png")


def test_cli_decompress_groups_files(
    run: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files decode in groups bounded by count and bytes; grouped or alone, the images are the same."""
    from vqkit.cli import compress as cli

    out = tmp_path / "vqk"
    assert main(["compress", str(run), str(image_folder), "-o", str(out)]) == 0
    files = sorted(out.glob("*.vqk"))
    monkeypatch.setattr(cli, "FILE_GROUP", 2)  # two files a group, 5 files: 2 + 2 + 1
    groups = [(start, [p.name for p in paths]) for start, paths, _ in cli._file_groups(files)]
    assert [start for start, _ in groups] == [0, 2, 4] and [n for _, g in groups for n in g] == [
        f.name for f in files
    ]
    monkeypatch.setattr(cli, "GROUP_BYTES", 1)  # every file alone
    assert [len(paths) for _, paths, _ in cli._file_groups(files)] == [1] * len(files)
    monkeypatch.setattr(cli, "FILE_GROUP", 3)
    monkeypatch.setattr(cli, "GROUP_BYTES", 1 << 20)  # groups of 3 + 2 files
    assert main(["decompress", *map(str, files), "-o", str(tmp_path / "png"), "--run", str(run)]) == 0
    for f in files:
        alone = decompress(run, f.read_bytes())[0]
        grouped = np.asarray(Image.open(tmp_path / "png" / f"{f.stem}.png")).reshape(alone.shape)
        assert np.abs(grouped.astype(int) - alone.astype(int)).max() <= 1


def test_cli_scale_round_trip_and_refusal(
    run: Path, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vqk"
    assert main(["compress", str(run), str(image_folder), "-o", str(out), "--scale", "1.5"]) == 0
    files = sorted(out.glob("*.vqk"))
    assert all(parse(f.read_bytes()).records[0].resampled for f in files)
    decompress_restores_modes_and_sizes(run, files, image_folder, tmp_path / "png")
    with pytest.raises(SystemExit):
        main(["compress", str(run), str(image_folder), "-o", str(out), "--scale", "9"])
    assert "--scale must lie in" in capsys.readouterr().err


def test_cli_archive(run: Path, image_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "all.vqk"
    assert main(["compress", str(run), str(image_folder), "-o", str(archive), "--archive"]) == 0
    assert len(parse(archive.read_bytes()).records) == 5
    assert main(["decompress", str(archive), "-o", str(tmp_path / "png"), "--run", str(run)]) == 0
    assert len(list((tmp_path / "png").glob("all-*.png"))) == 5
    single = tmp_path / "one.vqk"  # one image and a .vqk name: a file, not a folder
    assert main(["compress", str(run), str(image_folder / "a.png"), "-o", str(single)]) == 0
    assert len(parse(single.read_bytes()).records) == 1


def test_cli_fit_static(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / STATIC_TABLE_FILE).unlink()
    data = tmp_path / "train.npz"
    np.savez(data, images=np.stack(blob_images(16, (16, 16), 14)))
    assert main(["compress", str(copy), "--fit-static", str(data)]) == 0
    assert json.loads((copy / STATIC_TABLE_FILE).read_text())["images"] == 16


@pytest.mark.parametrize("problem", ["foreign", "truncated", "wrong_model", "bad_image"])
def test_cli_bad_input_one_line_error(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    good = compress_images(run, blob_images(1, (16, 16), 15)).files[0]
    path = tmp_path / "x.vqk"
    other = build_tiny_run(tmp_path / "other", seed=1)
    if problem == "bad_image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        argv = ["compress", str(run), str(tmp_path / "broken.png"), "-o", str(tmp_path / "out")]
    else:
        path.write_bytes(
            {"foreign": b"GIF89a" + bytes(30), "truncated": good[:-3], "wrong_model": good}[problem]
        )
        decoder = other if problem == "wrong_model" else run
        argv = ["decompress", str(path), "-o", str(tmp_path / "png"), "--run", str(decoder)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("vqkit: error: ") and err.count("\n") == 1 and "Traceback" not in err
