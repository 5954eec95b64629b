"""A residual VQ run through every stage after training: the codec at each stage count and entropy
model, the version-4 stage counts, compress --stages / --target-bpp / --target-psnr, evaluation with
per-stage health, features / probe / similar, the report, and the refusals (prior, codebook, search)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.cli import main
from vqkit.codec import (
    FORMAT_VERSION,
    CodecError,
    Coding,
    EntropyModel,
    compress_images,
    decode_codes,
    decompress,
    parse,
)
from vqkit.codec.api import encode_grids
from vqkit.codec.container import Mode, Record, build
from vqkit.codec.fitting import fit_static_model
from vqkit.codec.rd import available_models
from vqkit.codec.search import SearchConfig
from vqkit.codec.tables import frequencies_from_counts
from vqkit.data import ImageSet, read_image
from vqkit.pipeline import train
from vqkit.priors import train_prior
from vqkit.runs import Run, RunError, model_digest
from vqkit.tasks.features import extract_features
from vqkit.training import evaluate

from .conftest import smooth_images, tiny_run_config

GOLDEN = Path(__file__).resolve().parent / "golden"
STAGES, K = 3, 8


@pytest.fixture(scope="module")
def rvq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rvq")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3)
    cfg = tiny_run_config(str(data), max_steps=100, lr=1e-2, eval_every=1000, checkpoint_every=1000)
    q = dataclasses.replace(cfg.model.quantizer, kind="rvq", stages=STAGES, codebook_size=K)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, downsample=2, quantizer=q))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, root / "run", progress=False)
        fit_static_model(root / "run", list(smooth_images(96)))
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def images_of_differing_difficulty() -> list[np.ndarray]:
    """A flat grey image (easy), two smooth ones, and uniform noise (no model reaches it)."""
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    return [np.full((16, 16, 3), 128, np.uint8), *smooth_images(2, 16, seed=9), noise]


# ---- the codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entropy_model", ["raw", "static"])
def test_every_stage_count_round_trips_through_the_codec(rvq_run: Path, entropy_model: str) -> None:
    run = Run.load(rvq_run)
    images = list(smooth_images(5, 16, seed=9))
    want = run.encode(images)
    assert want[0].shape == (STAGES, 8, 8)
    sizes = []
    for n in range(1, STAGES + 1):
        result = compress_images(run, images, entropy_model=entropy_model, stages=n)
        assert result.entropy_model == entropy_model
        for f, w, report in zip(result.files, want, result.reports, strict=True):
            container, (grid,) = decode_codes(run, f)
            assert container.version == FORMAT_VERSION and container.records[0].stages == n == report.stages
            np.testing.assert_array_equal(grid, w[:n])  # bit for bit: the first n stages
            (back,) = decompress(run, f)
            np.testing.assert_array_equal(back, run.decode(w[None, :n], (16, 16))[0])
            assert report.bpp_nominal == pytest.approx(n * np.log2(K) * 64 / 256)
        sizes.append(sum(map(len, result.files)))
    assert sizes[0] < sizes[1] < sizes[2]  # every stage costs bits


def test_an_archive_holds_a_stage_count_per_image(rvq_run: Path) -> None:
    run = Run.load(rvq_run)
    images = list(smooth_images(3, 16, seed=4))
    result = compress_images(run, images, entropy_model="static", archive=True, stages=[2, 3, 1])
    container, grids = decode_codes(run, result.files[0])
    assert [r.stages for r in container.records] == [2, 3, 1]
    assert [g.shape[0] for g in grids] == [2, 3, 1]
    back = decompress(run, result.files[0])
    for image, grid, n in zip(back, run.encode(images), [2, 3, 1], strict=True):
        np.testing.assert_array_equal(image, run.decode(grid[None, :n], (16, 16))[0])


def test_bad_stage_counts_are_refused(rvq_run: Path) -> None:
    coding = Coding(rvq_run)
    images = list(smooth_images(1, 16, seed=4))
    for bad in (0, STAGES + 1):
        with pytest.raises(CodecError, match=f"1..{STAGES}"):
            compress_images(coding, images, stages=bad)
    grid = coding.run.encode(images)[0]
    payloads, _ = encode_grids(coding, [grid], EntropyModel.RAW)
    fingerprint = coding.fingerprint(EntropyModel.RAW)

    def file(stages: int) -> bytes:
        return build(
            EntropyModel.RAW,
            fingerprint,
            [Record(16, 16, Mode.RGB, len(payloads[0]), stages=stages)],
            payloads,
        )

    assert parse(file(STAGES)).records[0].stages == STAGES
    with pytest.raises(CodecError, match="holds 4 stages of codes, but"):
        decode_codes(coding, file(STAGES + 1))
    with pytest.raises(ValueError, match="1 to 64 stages"):
        build(EntropyModel.RAW, fingerprint, [Record(16, 16, Mode.RGB, 1, stages=0)], [b"x"])
    # a stage count of 0 in a file, the byte after the mode (version 5: behind the STAGED flag;
    # version 4: always there): refused as it is read (before the CRC)
    v4 = build(
        EntropyModel.RAW, fingerprint, [Record(16, 16, Mode.RGB, len(payloads[0]))], payloads, version=4
    )
    for data, count, pos in ((file(2), 2, 15 + 3), (v4, 1, 11 + 3)):  # version 5 has its checksum at 4
        zero = bytearray(data)
        assert zero[pos] == count
        zero[pos] = 0
        with pytest.raises(CodecError, match="0 stages"):
            parse(bytes(zero))
    assert len(file(1)) == len(v4) - 5  # version 5: no count for one stage, one checksum instead of two
    with pytest.raises(ValueError, match="version 3"):
        build(EntropyModel.RAW, fingerprint, [Record(16, 16, Mode.RGB, len(payloads[0]), stages=2)], payloads,
              version=3)  # fmt: skip


def test_a_single_stage_run_refuses_stage_counts(rvq_run: Path) -> None:
    coding = Coding(GOLDEN / "run")
    image = list(smooth_images(1, 16, seed=4))
    with pytest.raises(CodecError, match="residual VQ"):
        compress_images(coding, image, stages=2)
    payloads, _ = encode_grids(coding, coding.run.encode(image), EntropyModel.RAW)
    data = build(EntropyModel.RAW, coding.fingerprint(EntropyModel.RAW),
                 [Record(16, 16, Mode.RGB, len(payloads[0]), stages=2)], payloads)  # fmt: skip
    with pytest.raises(CodecError, match=r"holds 2 stages of codes, but .* has 1"):
        decode_codes(coding, data)


def test_the_prior_and_the_search_refuse_residual_runs(rvq_run: Path) -> None:
    images = list(smooth_images(2, 16, seed=4))
    for model in ("prior", "prior-tiles"):
        with pytest.raises(CodecError, match="residual VQ run"):
            compress_images(rvq_run, images, entropy_model=model)
    assert compress_images(rvq_run, images).entropy_model in ("static", "raw")  # auto: no prior
    coding = Coding(rvq_run)
    assert coding.prior() is None and available_models(coding) == ["raw", "static"]
    # a file whose header names a prior model, as a corrupt or foreign one may
    raw = compress_images(coding, images[:1], entropy_model="raw").files[0]
    c = parse(raw)
    prior_file = build(EntropyModel.PRIOR_OVERLAP, c.fingerprint, list(c.records), [raw[c.payload_offset :]])
    with pytest.raises(CodecError, match="prior entropy models do not code"):
        decode_codes(coding, prior_file)
    with pytest.raises(CodecError, match="single-stage"):
        compress_images(rvq_run, images, search=SearchConfig(1))
    with pytest.raises(RunError, match="residual VQ run"):
        train_prior(rvq_run, max_steps=1, progress=False)


def test_static_tables_are_per_stage_and_a_single_stage_table_is_as_before(rvq_run: Path) -> None:
    doc = json.loads((rvq_run / "entropy_static.json").read_text())
    assert doc["stages"] == STAGES and len(doc["counts"]) == STAGES
    grids = np.stack(Run.load(rvq_run).encode(list(smooth_images(96))))  # (N, S, h, w)
    for s in range(STAGES):
        assert doc["counts"][s] == np.bincount(grids[:, s].reshape(-1), minlength=K).tolist()
    # One stage: the file keeps one flat list (no "stages"), the fingerprint hashes the K entries.
    golden = json.loads((GOLDEN / "run" / "entropy_static.json").read_text())
    assert "stages" not in golden and len(golden["counts"]) == 16
    coding = Coding(GOLDEN / "run")
    table = frequencies_from_counts(np.array(golden["counts"]))
    params = table.astype("<u4").tobytes()
    want = hashlib.sha256(model_digest(GOLDEN / "run") + bytes([1]) + params).digest()[:6]
    assert (
        coding.fingerprint(EntropyModel.STATIC)
        == want
        == parse((GOLDEN / "static.vqk").read_bytes()).fingerprint
    )


# ---- the command line -----------------------------------------------------------------------------


def _compress(rvq_run: Path, folder: Path, inputs: Path, *flags: str) -> list[dict]:
    out = folder / "out"
    doc_path = folder / "c.json"
    assert main(["compress", str(rvq_run), str(inputs), "-o", str(out), "--json", str(doc_path),
                 "--entropy-model", "static", *flags]) == 0  # fmt: skip
    return json.loads(doc_path.read_text())["images"]


def _inputs(tmp_path: Path) -> Path:
    from vqkit.visual import save_png

    folder = tmp_path / "images"
    for i, image in enumerate(images_of_differing_difficulty()):
        save_png(image, folder / f"{i}.png")
    return folder


def test_compress_stages_and_decompress_reads_them(rvq_run: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    reports = _compress(rvq_run, tmp_path, inputs, "--stages", "2")
    assert [r["stages"] for r in reports] == [2] * 4
    files = sorted((tmp_path / "out").glob("*.vqk"))
    assert all(parse(f.read_bytes()).records[0].stages == 2 for f in files)
    assert main(["decompress", *map(str, files), "-o", str(tmp_path / "back"), "--run", str(rvq_run)]) == 0
    run = Run.load(rvq_run)
    for f in files:
        grid = run.encode([read_image(inputs / f"{f.stem}.png")])[0]
        np.testing.assert_array_equal(
            read_image(tmp_path / "back" / f"{f.stem}.png"), run.decode(grid[None, :2])[0]
        )


def _matrix(rvq_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(S, N) actual bpp and PSNR of each image at each stage count, measured independently."""
    images = images_of_differing_difficulty()
    reports = [compress_images(rvq_run, images, entropy_model="static", stages=n).reports for n in (1, 2, 3)]
    return np.array([[r.bpp_actual for r in rs] for rs in reports]), np.array(
        [[r.psnr for r in rs] for rs in reports]
    )


def test_target_psnr_picks_the_fewest_stages_that_reach_it_per_image(rvq_run: Path, tmp_path: Path) -> None:
    _, psnr = _matrix(rvq_run)
    target = psnr[0, 0] - 0.01  # the flat image reaches it with one stage; noise never does
    assert psnr[:, 3].max() < target
    picks = [
        r["stages"] for r in _compress(rvq_run, tmp_path, _inputs(tmp_path), "--target-psnr", str(target))
    ]
    good = psnr >= target
    assert picks == [int(np.argmax(good[:, i])) + 1 if good[:, i].any() else 3 for i in range(4)]
    assert picks[0] == 1 and picks[3] == 3  # the picks differ with the images' difficulty


def test_target_bpp_picks_the_most_stages_within_it_per_image(rvq_run: Path, tmp_path: Path) -> None:
    bpp, _ = _matrix(rvq_run)
    target = float(bpp[1].min())  # the cheapest image fits two stages, the dearest at two stages does not
    assert bpp[1].max() > target
    reports = _compress(rvq_run, tmp_path, _inputs(tmp_path), "--target-bpp", str(target))
    picks = [r["stages"] for r in reports]
    fits = bpp <= target
    assert picks == [int(np.nonzero(fits[:, i])[0].max()) + 1 if fits[:, i].any() else 1 for i in range(4)]
    assert len(set(picks)) > 1
    assert all(r["bpp_actual"] <= target or r["stages"] == 1 for r in reports)


def test_stage_options_on_a_single_stage_run_and_together_are_refused(
    rvq_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = str(_inputs(tmp_path))
    for flags in (["--stages", "2"], ["--target-bpp", "1"], ["--target-psnr", "30"]):
        assert main(["compress", str(GOLDEN / "run"), inputs, "-o", str(tmp_path / "o"), *flags]) == 1
        err = capsys.readouterr().err
        assert "residual VQ" in err and "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(
            [
                "compress",
                str(rvq_run),
                inputs,
                "-o",
                str(tmp_path / "o"),
                "--stages",
                "2",
                "--target-bpp",
                "1",
            ]
        )
    assert "not allowed with" in capsys.readouterr().err


def test_encode_and_decode_carry_the_stages(rvq_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, images=smooth_images(4, 16, seed=3))
    assert main(["encode", str(rvq_run), "--data", str(data), "-o", str(tmp_path / "codes.npz")]) == 0
    codes = np.load(tmp_path / "codes.npz")
    assert codes["indices"].shape == (4, STAGES, 8, 8) and int(codes["stages"]) == STAGES
    assert main(["decode", str(rvq_run), str(tmp_path / "codes.npz"), "-o", str(tmp_path / "png")]) == 0
    run = Run.load(rvq_run)
    first = sorted((tmp_path / "png").glob("*.png"))[0]
    np.testing.assert_array_equal(read_image(first), run.decode(codes["indices"][:1].astype(np.int64))[0])


# ---- evaluation, features, report -----------------------------------------------------------------


def test_evaluation_reports_each_stages_codebook_health(rvq_run: Path) -> None:
    run = Run.load(rvq_run)
    images = list(smooth_images(32, 16, seed=5))
    stats = evaluate(run.model, images, with_ssim=False)
    grids = np.stack(run.encode(images))
    assert stats["stages"] == STAGES and len(stats["per_stage"]) == STAGES
    for s, health in enumerate(stats["per_stage"]):
        used = np.unique(grids[:, s])
        assert health["stage"] == s + 1
        assert health["codebook_usage"] == pytest.approx(len(used) / K)
        assert health["dead_codes"] == K - len(used)
    assert stats["codebook_usage"] == pytest.approx(
        np.mean([h["codebook_usage"] for h in stats["per_stage"]])
    )
    assert stats["dead_codes"] == pytest.approx(np.mean([h["dead_codes"] for h in stats["per_stage"]]))
    assert stats["bpp_nominal"] == pytest.approx(STAGES * np.log2(K) * 64 / 256)


def test_features_probe_and_similar_use_the_per_stage_histograms(rvq_run: Path, tmp_path: Path) -> None:
    run = Run.load(rvq_run)
    images = list(smooth_images(12, 16, seed=6))
    data = ImageSet(images, np.arange(12) % 2, ("a", "b"), 3, "test", tuple(str(i) for i in range(12)))
    feats = extract_features(run, data)
    want = run.encode(images)
    assert feats.stages == STAGES and feats.histograms is not None and feats.indices is not None
    assert feats.histograms.shape == (12, STAGES * K)
    np.testing.assert_allclose(feats.histograms.sum(1), 1.0)
    for hist, grid in zip(feats.histograms, want, strict=True):
        for s in range(STAGES):
            counts = np.bincount(grid[s].reshape(-1), minlength=K) / grid[s].size / STAGES
            np.testing.assert_allclose(hist[s * K : (s + 1) * K], counts)
    npz = tmp_path / "data.npz"
    np.savez(npz, images=np.stack(images), labels=np.arange(12) % 2)
    assert main(["probe", str(rvq_run), "--train", str(npz), "--test", str(npz)]) == 0
    assert (
        main(
            ["similar", str(rvq_run), str(npz), "--data", str(npz), "-k", "3", "-o", str(tmp_path / "s.png")]
        )
        == 0
    )
    with pytest.raises(RunError, match="residual VQ run"):
        from vqkit.tasks.codebook import count_codes

        count_codes(run, data)


def test_the_report_shows_per_stage_health(rvq_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, images=smooth_images(8, 16, seed=3))
    assert main(["eval", str(rvq_run), "--data", str(data), "--json", str(rvq_run / "eval_extra.json")]) == 0
    assert main(["report", str(rvq_run), "-o", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<th>stage</th>" in page and "<th>dead_codes</th>" in page
