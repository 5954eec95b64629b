"""The README's commands, run in order as written, on a folder of a user's own images.

Every ``vqkit ...`` line of the README's usage sections runs in a scratch folder that holds what a
user would have: a folder of labelled training images, a few validation images, a folder of photos
to compress and a folder of noisy images. The only edits are the ones a user makes to try things
quickly: placeholders (RUN, DIR, VAL, ...) become those paths, optional ``[...]`` parts are dropped,
and wall-clock budgets become a few optimizer steps. A command that fails fails this test with its
output, so the README cannot drift from the command line. About two minutes on two cores: it is the
one long test in the default run, because it is the newcomer's path through vqkit.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import SHARED_DATA, smooth_images

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = (  # in the order a user meets them
    "Pretrained models",
    "Training on your own images",
    "Evaluating, encoding and compressing",
    "Generating, denoising and analysing",
    "The report",
)
PLACEHOLDERS = {  # README word -> path in the scratch folder
    "RUN": "runs/c10",
    "DIR": "train",
    "TRAIN": "train",
    "VAL": "val",
    "DATA": "val",
    "D": "val",
    "img.png": "val/cat/0.png",
    "image.png": "val/cat/0.png",
    "query.png": "val/dog/0.png",
    "noisy.png": "noisy/0.png",
}
FAST = ["--max-steps", "12", "--no-progress"]


def readme_commands() -> list[str]:
    """The ``vqkit`` lines of the usage sections' bash blocks, comments and ``[...]`` removed."""
    text = README.read_text()
    commands: list[str] = []
    for title in SECTIONS:
        match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert match, f"README has no section {title!r}"
        for block in re.findall(r"```bash\n(.*?)```", match.group(1), re.S):
            for line in block.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("vqkit "):
                    commands.append(re.sub(r"\s*\[[^\]]*\]", "", line))
    return commands


def adapt(command: str) -> list[str]:
    """One README line as a user trying it quickly would run it."""
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(command)]
    out: list[str] = []
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w == "--time-budget":  # minutes -> a few steps
            out += FAST
            skip = True
            continue
        out.append(w)
        if w == "train" and i == 1 and "--time-budget" not in words:
            out += FAST
    return out


def labelled_images(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(class, 32x32 RGB image): CIFAR-10 validation images when present, else generated blobs."""
    folders = [SHARED_DATA / "cifar10" / "val" / c for c in ("cat", "dog")]
    if all(f.is_dir() for f in folders):
        files = [(f.name, p) for f in folders for p in sorted(f.glob("*.webp"))[seed : seed + n // 2]]
        assert len(files) == n, f"CIFAR-10 val has too few images from {seed}"
        return [(c, np.asarray(Image.open(p).convert("RGB"))) for c, p in files]
    images = smooth_images(n, size=32, seed=seed)
    return [("cat" if i % 2 else "dog", img) for i, img in enumerate(images)]


def digits(n: int) -> list[tuple[str, np.ndarray]]:
    """28x28 grey digits: the first MNIST test digits when present, else generated strokes."""
    path = SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
    if path.is_file():
        import gzip

        raw = gzip.decompress(path.read_bytes())[16 : 16 + n * 784]
        images = np.frombuffer(raw, np.uint8).reshape(n, 28, 28)
    else:
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            images[i, 4:24, 8 + 2 * i : 12 + 2 * i] = 255
    return [("", img) for img in images]


def write_folder(root: Path, items: list[tuple[str, np.ndarray]], classes: bool = True) -> None:
    """PNGs named 0.png, 1.png, ... per class subfolder (or in ``root`` itself)."""
    counts: dict[str, int] = {}
    for label, img in items:
        folder = root / label if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        n = counts[str(folder)] = counts.get(str(folder), -1) + 1
        Image.fromarray(img).save(folder / f"{n}.png")


def test_readme_commands_run_in_order(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 20, commands  # the sections really hold the usage
    write_folder(tmp_path / "train", labelled_images(160, seed=0))
    write_folder(tmp_path / "val", labelled_images(24, seed=200))
    write_folder(tmp_path / "photos", labelled_images(6, seed=300), classes=False)
    rng = np.random.default_rng(0)
    noisy = [(c, np.clip(im + rng.normal(0, 25, im.shape), 0, 255).astype(np.uint8))
             for c, im in labelled_images(4, seed=350)]  # fmt: skip
    write_folder(tmp_path / "noisy", noisy, classes=False)
    write_folder(tmp_path / "digits", digits(5), classes=False)
    # The README's commands run in a clone, where recipes/ lies beside the user's data.
    (tmp_path / "recipes").symlink_to(README.parent / "recipes")
    env = {**os.environ, "VQKIT_HOME": str(tmp_path / "home")}
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    for command in commands:
        argv = adapt(command)
        # Globs (out/*.vqk) expand as the user's shell would expand them.
        words: list[str] = []
        for w in argv[1:]:
            matches = sorted(tmp_path.glob(w)) if "*" in w else []
            words += [str(p.relative_to(tmp_path)) for p in matches] or [w]
        done = subprocess.run(
            [sys.executable, "-m", "vqkit", *words], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"`{command}` as `{shlex.join(words)}` failed:\n{done.stderr[-3000:]}"
