"""vqkit compress / decompress: images <-> .vqk files (format: docs/format.md).

vqkit compress RUN INPUT... -o OUT_DIR            one .vqk per image (-o X.vqk for a single image)
vqkit compress RUN INPUT... -o FILE.vqk --archive one archive holding every image
vqkit compress RUN --fit-static TRAIN_DATA        fit the run's static code-frequency model
vqkit compress RUN INPUT... -o OUT --search 2     codes chosen by decoded error + rate (slower encoder;
                                                  a grouped prior's run searches by default, --search 0: not)
vqkit compress RUN INPUT... -o OUT --scale 1.25   code each image resampled 1.25x (more codes: higher rate)
vqkit compress RUN INPUT... -o OUT --stages 2     a residual VQ run: code its first 2 stages (default all)
vqkit compress RUN INPUT... -o OUT --target-bpp 1 ... per image, the most stages within 1 bit per pixel
vqkit compress RUN INPUT... -o OUT --target-psnr 30 ... per image, the fewest stages reaching 30 dB
vqkit decompress FILE.vqk... -o DIR               PNGs in the original sizes and modes; each file's
                                                  model found by its fingerprint (or --run RUN)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vqkit.cli.common import (
    add_device,
    add_json,
    add_output,
    add_run,
    add_threads,
    apply_threads,
    load_run,
    parser,
    report_skipped,
)
from vqkit.codec import (
    ENTROPY_CHOICES,
    CodecError,
    Coding,
    CompressResult,
    EntropyModel,
    choose_stages,
    compress_images,
    decode_codes_many,
    default_search,
    images_from_codes,
    parse,
)
from vqkit.codec.api import SCALE_RANGE
from vqkit.codec.coding import model_name
from vqkit.codec.files import output_stems, read_inputs, read_vqk, write_bytes, write_png
from vqkit.codec.fitting import fit_static_model
from vqkit.codec.search import DEFAULT_GROUPED, RATES, SearchConfig
from vqkit.runs import Run, RunError, registry, shipped, write_json

FILE_GROUP = 64  # at most this many files decoded together by `vqkit decompress`
GROUP_BYTES = 4 << 20  # ... and this much .vqk data (CIFAR: ~50,000 images; Kodak: ~150)


def _print_summary(result: CompressResult, where: Path) -> None:
    s = result.summary()
    low, high = min(r.stages for r in result.reports), max(r.stages for r in result.reports)
    stages = "" if high == 1 else f", stages {low}" if low == high else f", stages {low} to {high}"
    print(
        f"compressed {s['images']} images into {s['files']} file(s) in {where} "
        f"(entropy model: {s['entropy_model']}{stages})\n"
        f"  bpp nominal {s['bpp_nominal']:.4f}  estimated {s['bpp_estimated']:.4f}  "
        f"actual {s['bpp_actual']:.4f} (headers {s['bytes_header']} of {s['bytes_total']} bytes)\n"
        f"  psnr {s['psnr']:.2f} dB  ssim {s['ssim']:.4f}"
    )


def compress_main(argv: list[str]) -> int:
    p = parser("compress", "Compress images into .vqk files (docs/format.md).")
    add_run(p)
    p.add_argument("inputs", nargs="*", help="image files, folders of images, or data specs")
    add_output(p, "folder of .vqk files; a FILE.vqk with --archive or for one image", required=False)
    p.add_argument("--archive", action="store_true", help="put every image into one .vqk")
    p.add_argument(
        "--entropy-model",
        choices=ENTROPY_CHOICES,
        default="auto",
        help="auto (default): whichever of grouped, prior (any image size), static, raw gives the smallest "
        "files; grouped codes with a grouped prior's integer network in a few parallel steps (fast, the "
        "same on every machine); prior codes with a serial prior in overlapping windows, prior-tiles in "
        "independent tiles (on photos: ~2.7x faster, ~5%% bigger)",
    )
    add_json(p, "per-image and overall rates and quality")
    p.add_argument(
        "--fit-static", metavar="SPEC", help="first fit the static model on this data (training set)"
    )
    p.add_argument("--max-images", type=int, help="compress at most this many images")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first image file that cannot be read (default: skip it and name it)",
    )
    p.add_argument(
        "--search",
        type=int,
        metavar="PASSES",
        help="choose codes by decoded error + rate instead of nearest codes, in this many sweeps "
        "(slower encoding; decoding unchanged; 2 is a good start). Default: when the run's grouped "
        f"prior codes the files, a light search ({DEFAULT_GROUPED.passes} pass, "
        f"{DEFAULT_GROUPED.candidates} candidates, scored within {DEFAULT_GROUPED.radius} code cell); "
        "otherwise none. 0: no search",
    )
    p.add_argument("--search-candidates", type=int,
                   help=f"nearest codes tried per position (default {SearchConfig.candidates}; "
                        f"{DEFAULT_GROUPED.candidates} in the default search)")  # fmt: skip
    p.add_argument("--search-lambda", type=float, default=SearchConfig.lmbda,
                   help="squared error (8-bit units) one bit is worth; 0 ignores the rate "
                        f"(default {SearchConfig.lmbda:g})")  # fmt: skip
    p.add_argument("--search-rate", choices=RATES, default=SearchConfig.rate,
                   help="the bits the search charges: auto (default) the prior's, given the codes "
                        "before, when the prior codes the file; static: the static table's")  # fmt: skip
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="code each image resampled by this factor and resample back when decoding: above 1 more "
        "codes (higher rate and quality), below 1 fewer; a rate control for any run (default 1)",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--stages", type=int, metavar="N",
                      help="residual VQ (rvq) runs: code the first N of the run's S stages of "
                           "codes (default all S): fewer stages, lower rate")  # fmt: skip
    rate.add_argument("--target-bpp", type=float, metavar="B",
                      help="residual VQ runs: per image, the most stages whose actual bits per pixel "
                           "stay <= B (else 1 stage)")  # fmt: skip
    rate.add_argument("--target-psnr", type=float, metavar="P",
                      help="residual VQ runs: per image, the fewest stages whose decoded PSNR is "
                           ">= P dB (else all stages)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for --search and the prior)")
    add_threads(p)
    add_device(p)
    a = p.parse_args(argv)
    apply_threads(p, a.threads)
    if a.stages is not None and a.stages < 1:
        p.error("--stages must be >= 1")
    if a.target_bpp is not None and not a.target_bpp > 0:
        p.error("--target-bpp must be > 0")
    if not SCALE_RANGE[0] <= a.scale <= SCALE_RANGE[1]:
        p.error(f"--scale must lie in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
    if a.search is not None and a.search < 0:
        p.error("--search must be >= 0 (0: no search)")
    try:  # checked before any image is read (the default search takes the same options)
        asked = SearchConfig(a.search or 1, a.search_candidates or SearchConfig.candidates, a.search_lambda,
                             a.search_rate)  # fmt: skip
    except ValueError as e:
        p.error(str(e))
    if a.fit_static:
        path = fit_static_model(a.run, a.fit_static, device=a.device, precision=a.precision)
        registry.register(a.run)
        print(f"fitted the static entropy model on {a.fit_static}: {path}")
    if not a.inputs:
        if a.fit_static:
            return 0
        p.error("give INPUT images to compress (or --fit-static SPEC)")
    if a.output is None:
        p.error("-o/--output is required when compressing")
    if a.max_images is not None and a.max_images < 1:
        p.error("--max-images must be >= 1")
    images, names, problems = read_inputs(a.inputs, a.max_images, strict=a.strict)
    report_skipped(problems)
    coding = Coding(load_run(a.run, a.device, a.precision))
    search: SearchConfig | None = asked if a.search else None
    light = default_search(coding, a.entropy_model)
    if (
        a.search is None
        and light is not None
        and a.stages is None
        and a.target_bpp is None
        and a.target_psnr is None
    ):
        search = dataclasses.replace(light, candidates=a.search_candidates or light.candidates,
                                     lmbda=a.search_lambda, rate=a.search_rate)  # fmt: skip
    stages: int | list[int] | None = a.stages
    entropy_model = a.entropy_model
    if a.stages is not None and coding.stages == 1 and a.stages != 1:
        raise CodecError(
            f"--stages applies to residual VQ (rvq) runs; {a.run} has one stage of codes "
            "(--scale sets the rate of any run)"
        )
    if a.target_bpp is not None or a.target_psnr is not None:
        choice = choose_stages(
            coding, images, target_bpp=a.target_bpp, target_psnr=a.target_psnr,
            entropy_model=a.entropy_model, archive=a.archive, scale=a.scale,
        )  # fmt: skip
        stages, entropy_model = choice.stages, choice.entropy_model
    result = compress_images(
        coding,
        images,
        entropy_model=entropy_model,
        archive=a.archive,
        names=names,
        search=search,
        progress=not a.no_progress,
        scale=a.scale,
        stages=stages,
    )
    if a.archive or (a.output.suffix == ".vqk" and len(images) == 1):
        out = a.output if a.output.suffix == ".vqk" else a.output.with_suffix(".vqk")
        write_bytes(out, result.files[0])
    else:
        out = a.output
        if out.exists() and not out.is_dir():
            raise CodecError(f"{out} is a file; without --archive, -o names a folder")
        for stem, data in zip(output_stems(names), result.files, strict=True):
            write_bytes(out / f"{stem}.vqk", data)
    if a.json:
        doc = {
            "command": ["vqkit", "compress", *argv],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "run": str(a.run),
            "search": None if search is None else asdict(search),
            "scale": a.scale,
            "target_bpp": a.target_bpp,
            "target_psnr": a.target_psnr,
            **result.to_json(),
        }
        write_json(a.json, doc)
    _print_summary(result, out)
    return 0


def _file_groups(files: list[Path]) -> Iterator[tuple[int, list[Path], list[bytes]]]:
    """(index of the first, paths, bytes) of consecutive files decoded together: at most FILE_GROUP
    files and GROUP_BYTES of data (a single larger file goes alone). The prior walks a group's images
    together, 16 per step; the limits bound what is held in memory."""
    start = 0
    while start < len(files):
        paths: list[Path] = []
        blobs: list[bytes] = []
        while (
            start + len(paths) < len(files) and len(paths) < FILE_GROUP and sum(map(len, blobs)) < GROUP_BYTES
        ):
            paths.append(files[start + len(paths)])
            blobs.append(read_vqk(paths[-1]))
        yield start, paths, blobs
        start += len(paths)


FileModel = tuple[EntropyModel, bytes]  # what a .vqk header says of its model: entropy model, fingerprint


def _file_model(path: Path) -> FileModel:
    container = parse(read_vqk(path), str(path))
    return container.entropy_model, container.fingerprint


def _find_runs(files: list[Path], device: str, precision: str) -> list[tuple[Coding, list[int]]]:
    """Each file's model found among the registered runs (vqkit.runs.registry), then the shipped
    models (vqkit.runs.shipped), by the fingerprint in its header, which binds the VQ-VAE's weights
    and the entropy model's parameters: (coding, indices of its files) per run, in the order the runs
    are first needed. Every file is matched before
    anything is decoded, so a file no known run wrote stops the command before it writes."""
    found: dict[FileModel, Path | None] = {}
    codings: dict[Path, Coding | None] = {}  # None: a registered run that cannot code (e.g. stale table)

    def coding_of(folder: Path) -> Coding | None:
        if folder not in codings:
            try:
                codings[folder] = Coding(Run.load(folder, device, precision))
            except (RunError, CodecError):
                codings[folder] = None
        return codings[folder]

    def matches(folder: Path, key: FileModel) -> bool:
        coding = coding_of(folder)
        if coding is None:
            return False
        try:
            return coding.fingerprint(key[0]) == key[1]
        except RunError:  # the run lacks that entropy model (no static table, no prior)
            return False

    groups: dict[Path, list[int]] = {}
    for i, path in enumerate(files):
        key = _file_model(path)
        if key not in found:
            candidates = chain((f for _, f in registry.registered_runs()), shipped.model_folders())
            found[key] = next((f for f in candidates if matches(f, key)), None)
        folder = found[key]
        if folder is None:
            raise CodecError(
                f"no run on this machine wrote {path} (file fingerprint {key[1].hex()}, "
                f"{model_name(key[0])} entropy model); pass --run RUN, the run that compressed it"
            )
        groups.setdefault(folder, []).append(i)
    out: list[tuple[Coding, list[int]]] = []
    for folder, indices in groups.items():
        coding = codings[folder]
        assert coding is not None  # it matched
        registry.register(folder)
        out.append((coding, indices))
    return out


def _unique_stems(files: list[Path]) -> list[str]:
    """Output stems in file order; a stem seen before gets the file's position appended."""
    stems: list[str] = []
    seen: set[str] = set()
    for n, path in enumerate(files):
        stem = path.stem if path.stem not in seen else f"{path.stem}_{n:05d}"
        seen.add(stem)
        stems.append(stem)
    return stems


def _vqk_files(paths: list[Path]) -> list[Path]:
    """The files to decode: each file as given, each folder's *.vqk files in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.vqk"))
            if not found:
                raise CodecError(f"{path} is a folder without .vqk files")
            files += found
        else:
            files.append(path)
    return files


def decompress_main(argv: list[str]) -> int:
    p = parser(
        "decompress",
        "Decompress .vqk files to PNG images (original sizes and modes). Each file's model is found by "
        "the fingerprint in its header among the runs trained or used on this machine, or named by --run.",
    )
    p.add_argument("files", nargs="+", type=Path, help=".vqk files, or folders of them (their *.vqk files)")
    add_output(p, "output folder of PNG images")
    p.add_argument("--run", type=Path, help="the run that compressed the files (default: each file's run, "
                   "found by its fingerprint among the runs trained or used on this machine)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--codes", action="store_true",
                   help="also write each image's decoded code grid beside its PNG, as NAME.codes.npy "
                   "(int64, (h, w), or (n, h, w) for n stages of a residual VQ run)")  # fmt: skip
    add_threads(p)
    add_device(p)
    a = p.parse_args(argv)
    apply_threads(p, a.threads)
    a.files = _vqk_files(a.files)
    if a.run is not None:
        groups = [(Coding(load_run(a.run, a.device, a.precision)), list(range(len(a.files))))]
    else:
        groups = _find_runs(a.files, a.device, a.precision)
    stems = _unique_stems(a.files)
    count = 0
    # the bar only on a terminal (disable=None), so piped output and error lines stay clean
    disable = True if a.no_progress else None
    with (
        tqdm(total=len(a.files), desc="decompress", unit="file", disable=disable, leave=False) as bar,
        tqdm(desc="prior", unit="code", unit_scale=True, disable=disable, leave=False, position=1) as codes,
    ):
        for coding, indices in groups:
            files = [a.files[i] for i in indices]
            for start, paths, blobs in _file_groups(files):
                names = [str(path) for path in paths]
                parsed = decode_codes_many(coding, blobs, names=names, progress=codes.update)
                decoded = images_from_codes(coding, parsed, blobs, names)
                grids = [gs for _, gs in parsed] if a.codes else None
                for n, images in enumerate(decoded, start=start):
                    stem = stems[indices[n]]
                    for i, image in enumerate(images):
                        name = f"{stem}.png" if len(images) == 1 else f"{stem}-{i:05d}.png"
                        write_png(a.output / name, image)
                        if grids is not None:
                            np.save(a.output / (name[: -len(".png")] + ".codes.npy"), grids[n - start][i])
                    count += len(images)
                bar.update(len(paths))
    print(f"decompressed {count} images from {len(a.files)} file(s) into {a.output}")
    return 0
