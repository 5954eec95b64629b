"""Regenerate the golden .vqk files and the tiny run that wrote them. Only behind an explicit switch:

    VQKIT_MAKE_GOLDEN=1 .venv/bin/python -m tests.golden.make_golden [NAME ...]

Writes tests/golden/run/ (config.json, model.safetensors, entropy_static.json, prior.safetensors,
prior_config.json), raw.vqk, static.vqk, prior.vqk, prior_overlap.vqk, scaled.vqk (format versions 1 and
2, as vqkit 0.1 wrote them; scaled.vqk holds images coded at 1.5 times their size), the same five in
v3/ (format version 3: the same payloads with checksums) and v4/ (version 4: a stage count of 1 per
image) and expected.json (each image's code grid); with NAMEs (e.g. prior_overlap), only those files,
by the committed run; with the single NAME ``v3`` or ``v4``, only the files of that version, rebuilt
from the committed older ones. The single NAME ``rvq`` writes v4/rvq_run/ (a tiny residual VQ run
of 3 stages with per-stage static tables), v4/rvq_raw.vqk and v4/rvq_static.vqk (images coded with
1, 2 and 3 stages) and v4/expected.json; the single NAME ``grouped`` writes v4/grouped_run/ (a tiny run
with a grouped prior's integer network), v4/grouped.vqk (entropy model 4) and v4/grouped.json; the
single NAME ``v5`` writes v5/ (format version 5, the compact layout): the five older files and v4's
two residual VQ archives rebuilt in it, and v5/grouped_run/ (a grouped prior with a code order,
integer prior format 3), v5/grouped.vqk and v5/grouped.json.
Regenerate only on a deliberate format change;
tests/test_codec_golden.py and tests/test_vqk_integrity.py then guard the new files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from vqkit.codec import coded_size, compress_images, decode_codes, fit_static_model, parse, resample
from vqkit.codec.container import build
from vqkit.codec.fitting import as_model_inputs
from vqkit.config import ModelConfig, QuantizerConfig, RunConfig
from vqkit.data import to_float
from vqkit.models import VQVAE
from vqkit.runs import Run, save_config, save_model, write_json
from vqkit.runs.layout import CONFIG_FILE

GOLDEN = Path(__file__).resolve().parent
SWITCH = "VQKIT_MAKE_GOLDEN"


def blob_images(n: int, size: tuple[int, int], seed: int, channels: int = 3) -> list[np.ndarray]:
    """Smooth random colour fields, (H, W, channels) uint8, a pure function of the arguments."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((n, channels, 3, 3))).float()
    up = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return list((up.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))


def build_tiny_run(
    run_dir: Path,
    *,
    codebook_size: int = 16,
    seed: int = 0,
    channels: int = 3,
    static: bool = True,
    stages: int = 1,
) -> Path:
    """A small untrained VQ-VAE whose codebook is k-means-initialised on blob images (so codes vary),
    saved as a run folder with a fitted static entropy model. About 40 KB; well under a second.
    ``stages`` > 1: a residual VQ (rvq) run of that many stages."""
    torch.manual_seed(seed)
    kind = {"kind": "rvq", "stages": stages} if stages > 1 else {}
    quantizer = QuantizerConfig(codebook_size=codebook_size, code_dim=4, **kind)  # type: ignore[arg-type]
    net = {"channels": 8, "res_channels": 4, "res_blocks": 0, "in_channels": channels}
    cfg = RunConfig(model=ModelConfig(**net, quantizer=quantizer))  # type: ignore[arg-type]
    model = VQVAE(cfg.model)
    train = blob_images(128, (16, 16), seed + 1, channels)
    model.train()
    model(to_float(torch.from_numpy(np.stack(train))))  # the first training pass runs k-means
    model.eval()
    save_config(run_dir, cfg)
    # Keep only the model section (the rest takes defaults on load), so renaming a training or data
    # option elsewhere in vqkit cannot make this run, and the golden files, unreadable.
    doc = json.loads((run_dir / CONFIG_FILE).read_text())
    doc = {k: doc[k] for k in ("format", "format_version", "vqkit_version")} | {
        "config": {"model": doc["config"]["model"]}
    }
    write_json(run_dir / CONFIG_FILE, doc)
    save_model(run_dir, model)
    if static:
        fit_static_model(run_dir, train)
    return run_dir


def tiny_prior(codebook_size: int, grid: tuple[int, int], seed: int = 0) -> torch.nn.Module:
    """A tiny real CodePrior with random (not uniform) outputs."""
    from vqkit.priors import CodePrior, PriorConfig

    torch.manual_seed(seed)
    cfg = PriorConfig(codebook_size=codebook_size, grid=grid, width=8, layers=1, heads=2, mlp_ratio=1)
    prior = CodePrior(cfg)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.5)
    return prior.eval()


def grouped_run(path: Path, schedule: str = "2x2", seed: int = 0, k: int = 16, shuffle: bool = False) -> Path:
    """A tiny run with a random (not uniform) grouped prior exported to its integer network;
    ``shuffle``: with a random code order (format 3) instead of index order."""
    from vqkit.priors import GroupedPrior, PriorConfig
    from vqkit.priors.integer_export import export_integer
    from vqkit.runs import Run, model_fingerprint
    from vqkit.runs.layout import INTEGER_PRIOR_FILE

    run_dir = build_tiny_run(path, codebook_size=k)
    torch.manual_seed(seed)
    prior = GroupedPrior(PriorConfig(kind="grouped", schedule=schedule, codebook_size=k, width=16,
                                     layers=2, embed_dim=4, radius=2))  # fmt: skip
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.5)
    if shuffle:
        prior.set_code_order(np.random.default_rng(seed + 100).permutation(k))
    grids = Run.load(run_dir).encode(blob_images(32, (16, 16), 5))
    integer = export_integer(prior.eval(), np.stack(grids))
    integer.info["model_fingerprint"] = model_fingerprint(run_dir)  # as `vqkit prior train` stamps it
    integer.save(run_dir / INTEGER_PRIOR_FILE)
    return run_dir


def golden_images() -> dict[str, list[np.ndarray]]:
    rgb = blob_images(3, (16, 16), 11)
    grey = blob_images(1, (12, 20), 12, channels=1)
    rgba = [np.concatenate([blob_images(1, (10, 6), 13)[0], blob_images(1, (10, 6), 14, 1)[0]], axis=2)]
    # a 10x7 grid under the 4x4 prior: overlapping windows with context and padding, then a 4x4 one
    overlap = [blob_images(1, (40, 28), 15)[0], rgb[1]]
    return {
        "raw": rgb[:1],
        "static": [rgb[0], grey[0], rgba[0]],
        "prior": rgb,
        "prior_overlap": overlap,
        "scaled": [rgb[2], grey[0], rgba[0]],
    }


# file name -> the entropy model's name on the command line ("prior" codes overlapping windows now;
# prior.vqk was written with independent tiles before they existed)
CHOICE = {
    "raw": "raw",
    "static": "static",
    "prior": "prior-tiles",
    "prior_overlap": "prior",
    "scaled": "static",
}
SCALE = {"scaled": 1.5}  # the others are coded at their own size


def in_version(data: bytes, version: int) -> bytes:
    """The same images and payloads in another container version."""
    c = parse(data)
    payloads = [
        data[o : o + r.codes_length + r.alpha_length] for o, r in zip(c.offsets(), c.records, strict=True)
    ]
    return build(c.entropy_model, c.fingerprint, list(c.records), payloads, version=version)


def legacy_version(name: str) -> int:
    return 2 if name == "scaled" else 1  # what vqkit 0.1 wrote: 2 only for resampled images


def write_version_files(names: list[str], version: int) -> None:
    """The committed older files rebuilt in ``version`` (3, 4 or 5) into v3/, v4/ or v5/."""
    folder = GOLDEN / f"v{version}"
    folder.mkdir(exist_ok=True)
    for name in names:
        data = in_version((GOLDEN / f"{name}.vqk").read_bytes(), version)
        (folder / f"{name}.vqk").write_bytes(data)
        print(f"v{version}/{name}.vqk: {len(data)} bytes")


RVQ_STAGES = 3
RVQ_COUNTS = [3, 1, 2]  # the stages each golden image is coded with


def rvq_images() -> list[np.ndarray]:
    rgb = blob_images(2, (16, 16), 21)
    grey = blob_images(1, (12, 20), 22, channels=1)
    return [rgb[0], grey[0], rgb[1]]


def write_rvq_files() -> None:
    """A residual VQ run of 3 stages and two archives whose images hold 3, 1 and 2 stages."""
    folder = GOLDEN / "v4"
    folder.mkdir(exist_ok=True)
    run = build_tiny_run(folder / "rvq_run", seed=5, stages=RVQ_STAGES)
    images = rvq_images()
    grids = [Run.load(run).encode([x])[0] for x in as_model_inputs(images, 3)]
    expected: dict[str, object] = {"stages": RVQ_COUNTS}
    for model in ("raw", "static"):
        result = compress_images(
            run, images, entropy_model=model, archive=True, quality=False, stages=RVQ_COUNTS
        )
        data = result.files[0]
        _, decoded = decode_codes(run, data)
        want = [g[:n] for g, n in zip(grids, RVQ_COUNTS, strict=True)]
        assert all(np.array_equal(a, b) for a, b in zip(want, decoded, strict=True)), model
        (folder / f"rvq_{model}.vqk").write_bytes(data)
        expected[f"rvq_{model}"] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "sizes": [list(im.shape) for im in images],
            "indices": [g.tolist() for g in want],
        }
        print(f"v4/rvq_{model}.vqk: {len(data)} bytes")
    (folder / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def write_v5_files() -> None:
    """v5/: the committed older files and v4's residual VQ archives rebuilt in version 5 (the compact
    layout), and a grouped archive whose integer prior has a code order (integer prior format 3)."""
    write_version_files(list(golden_images()), 5)
    for name in ("rvq_raw", "rvq_static"):
        data = in_version((GOLDEN / "v4" / f"{name}.vqk").read_bytes(), 5)
        (GOLDEN / "v5" / f"{name}.vqk").write_bytes(data)
        print(f"v5/{name}.vqk: {len(data)} bytes")
    write_grouped_files("v5", schedule="8x8-7", shuffle=True)


def write_grouped_files(version: str = "v4", *, schedule: str = "4x4-8", shuffle: bool = False) -> None:
    """A run with a grouped prior's integer network (v4: 4x4-8 schedule, index order; v5: 8x8-7 and a
    code order) and one archive of images of three grid shapes coded with it (entropy model 4)."""
    folder = GOLDEN / version
    run = grouped_run(folder / "grouped_run", schedule=schedule, seed=3, shuffle=shuffle)
    images = [blob_images(1, size, 90 + i)[0] for i, size in enumerate([(16, 16), (40, 28), (12, 20)])]
    result = compress_images(run, images, entropy_model="grouped", archive=True, quality=False)
    data = result.files[0]
    if version == "v4":  # the archive as version 4 wrote it
        data = in_version(data, 4)
    _, decoded = decode_codes(run, data)
    assert all(np.array_equal(a, b) for a, b in zip(result.grids, decoded, strict=True))
    (folder / "grouped.vqk").write_bytes(data)
    expected = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                "sizes": [list(im.shape) for im in images],
                "indices": [g.tolist() for g in decoded]}  # fmt: skip
    (folder / "grouped.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{version}/grouped.vqk: {len(data)} bytes")


def main() -> int:
    if os.environ.get(SWITCH) != "1":
        print(f"refusing to overwrite the golden files; set {SWITCH}=1 to regenerate them", file=sys.stderr)
        return 2
    from vqkit.priors import save_prior

    # With file names as arguments, only those are (re)written, by the committed run: a new entropy
    # model gets its golden file without touching the others.
    only = sys.argv[1:]
    if only in (["v3"], ["v4"]):
        write_version_files(list(golden_images()), int(only[0][1]))
        return 0
    if only == ["v5"]:
        write_v5_files()
        return 0
    if only == ["grouped"]:
        write_grouped_files()
        return 0
    if only == ["rvq"]:
        write_rvq_files()
        return 0
    expected: dict[str, dict[str, object]] = {}
    if only:
        run = GOLDEN / "run"
        expected = json.loads((GOLDEN / "expected.json").read_text())
    else:
        run = build_tiny_run(GOLDEN / "run")
        save_prior(run, tiny_prior(16, (4, 4)))
    for name, images in golden_images().items():
        if only and name not in only:
            continue
        scale = SCALE.get(name, 1.0)
        result = compress_images(
            run, images, entropy_model=CHOICE[name], archive=True, quality=False, scale=scale
        )
        data = in_version(result.files[0], legacy_version(name))
        (GOLDEN / f"{name}.vqk").write_bytes(data)
        write_version_files([name], 3)
        write_version_files([name], 4)
        write_version_files([name], 5)
        inputs = [resample(x, coded_size(*x.shape[:2], scale)) for x in as_model_inputs(images, 3)]
        grids = [Run.load(run).encode([x])[0] for x in inputs]
        _, decoded = decode_codes(run, data)
        assert all(np.array_equal(a, b) for a, b in zip(grids, decoded, strict=True)), name
        expected[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "sizes": [list(im.shape) for im in images],
            "indices": [g.tolist() for g in grids],
            "alpha_sha256": [
                hashlib.sha256(im[:, :, -1].tobytes()).hexdigest() if im.shape[2] in (2, 4) else None
                for im in images
            ],
        }
        print(f"{name}.vqk: {len(data)} bytes, {len(images)} images")
    (GOLDEN / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
