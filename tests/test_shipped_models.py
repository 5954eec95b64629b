"""Shipped models: a name works wherever a run folder does, every file is checked against the package
registry's SHA-256, shipped folders stay read-only, and `vqkit models` lists, prints, verifies and
copies them. The tests use a zoo of their own: a tiny run with a prior, installed into a temporary
registry (tests/test_shipped_zoo.py checks the models that really ship)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.pipeline import train
from vqkit.runs import Run, RunError, model_fingerprint, registry, shipped
from vqkit.zoo import cards, pack

from .conftest import smooth_images, tiny_run_config
from .test_prior_cli import TINY_PRIOR

CARD = {
    "task": "tiny test model",
    "summary": "A 16x16 VQ-VAE with a prior, for the tests.",
    "data": {"train": "smooth noise", "eval": "more smooth noise", "licence": "none"},
    "licence": "Apache-2.0",
    "grid": "4x4 codes, K = 16",
    "rate": "about 4 bits/code",
    "quality": "blurry",
    "recipe": "tests/conftest.py",
    "rebuild": "pytest",
    "commands": ["vqkit train ...", "vqkit prior train ..."],
    "vqkit_commit": "0000000",
    "device": "2 CPU threads",
    "minutes": {"VQ-VAE": 0.1, "prior": 0.1},
    "figures": [{"what": "PSNR", "value": "12.00 dB", "results": "zoo_tiny.json"}],
    "limits": ["Only for tests."],
}
SHIPPED = [
    "config.json",
    "model.safetensors",
    "entropy_static.json",
    "prior.safetensors",
    "prior_config.json",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (16x16 images -> 4x4 grids, K = 16) with its static table and a prior."""
    root = tmp_path_factory.mktemp("shipped")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3)
    run = root / "run"
    train(tiny_run_config(str(data), max_steps=4), run, progress=False)
    assert main(["prior", "train", str(run), "--max-steps", "4", "--no-progress", *TINY_PRIOR]) == 0
    return run


@pytest.fixture
def zoo(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[shipped.ShippedModel]:
    """The tiny run installed as the shipped model "tiny" of a registry of this test's own; the
    working directory is an empty folder (where shipped models' outputs go)."""
    monkeypatch.setattr(shipped, "MODELS_DIR", tmp_path / "zoo" / "models")
    monkeypatch.setattr(shipped, "REGISTRY_PATH", tmp_path / "zoo" / "registry.json")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield pack.install_model(trained, "tiny", SHIPPED, CARD)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_install_hashes_every_file(zoo: shipped.ShippedModel, trained: Path) -> None:
    assert sorted(zoo.files) == sorted([*SHIPPED, "card.json"])
    assert zoo.path == shipped.MODELS_DIR / "tiny"
    assert zoo.fingerprint == model_fingerprint(trained)
    doc = json.loads(shipped.REGISTRY_PATH.read_text())
    assert doc["format"] == "vqkit-model-registry" and doc["format_version"] == 1
    for file, digest in doc["models"]["tiny"]["files"].items():
        assert hashlib.sha256((zoo.path / file).read_bytes()).hexdigest() == digest
    assert shipped.verify("tiny") == zoo


def test_a_name_loads_like_a_run_folder(zoo: shipped.ShippedModel, trained: Path) -> None:
    run = Run.load("tiny")
    assert run.path == zoo.path
    images = smooth_images(2)
    assert np.array_equal(run.encode(images), Run.load(trained).encode(images))


def test_a_folder_of_that_name_wins(zoo: shipped.ShippedModel, trained: Path) -> None:
    assert shipped.resolve("tiny") == zoo.path
    Path("tiny").mkdir()  # the user's own folder in the working directory
    assert shipped.resolve("tiny") == Path("tiny")
    assert shipped.resolve("sub/tiny") == Path("sub/tiny")  # a path is never a name
    assert shipped.resolve("nothing") == Path("nothing")


def test_a_changed_file_is_refused_with_the_expected_hash(
    zoo: shipped.ShippedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = zoo.path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(RunError, match=zoo.files["model.safetensors"]) as e:
        Run.load("tiny")
    assert "shipped model tiny" in str(e.value) and "reinstall" in str(e.value)
    assert main(["sample", "tiny", "-n", "2"]) == 1
    err = capsys.readouterr().err
    assert "tiny" in err and zoo.files["model.safetensors"] in err
    assert main(["models", "--verify"]) == 1


def test_a_missing_file_is_named(zoo: shipped.ShippedModel) -> None:
    (zoo.path / "prior.safetensors").unlink()
    with pytest.raises(RunError, match=r"prior\.safetensors is missing"):
        shipped.verify("tiny")


def test_models_lists_prints_and_verifies(
    zoo: shipped.ShippedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    for text in ("tiny", "tiny test model", "smooth noise", "4x4 codes", "about 4 bits/code", "blurry", "KB",
                 "Apache-2.0"):  # fmt: skip
        assert text in line
    assert main(["models", "tiny"]) == 0
    card = capsys.readouterr().out
    for text in ("12.00 dB", "zoo_tiny.json", "vqkit prior train ...", "Only for tests.", zoo.fingerprint):
        assert text in card
    assert main(["models", "--verify"]) == 0
    assert "tiny: 6 files match the registry" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (
        doc["name"] == "tiny" and doc["files"] == zoo.files and doc["card"]["limits"] == ["Only for tests."]
    )
    assert main(["models", "nothing"]) == 1
    assert "no shipped model named 'nothing'" in capsys.readouterr().err


def test_docs_render_every_card(zoo: shipped.ShippedModel) -> None:
    text = cards.render_docs()
    assert "| `tiny` | tiny test model |" in text and "## `tiny`: tiny test model" in text


def test_shipped_folders_are_read_only(zoo: shipped.ShippedModel, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(zoo.path)
    assert main(["prior", "train", "tiny", "--overwrite", "--max-steps", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "read-only" in err and "vqkit models tiny --copy DIR" in err
    assert main(["sample", "tiny", "-n", "2", "--seed", "0"]) == 0
    assert Image.open("tiny-samples.png").size[0] > 0  # in the working directory, named after the model
    assert main(["report", "tiny"]) == 0
    assert Path("tiny-report.html").is_file()
    assert _snapshot(zoo.path) == before  # nothing written into the package, not even a lock or a cache


def test_decompress_finds_a_shipped_model_by_fingerprint(
    zoo: shipped.ShippedModel, vqkit_home: Path, tmp_path: Path
) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(smooth_images(1)[0]).save(image)
    assert main(["compress", "tiny", str(image), "-o", "out/", "--no-progress"]) == 0
    assert list(registry.registered_runs()) == []  # this machine has seen no run: only the package has it
    assert main(["decompress", "out", "-o", "back/", "--no-progress"]) == 0  # a folder: its .vqk files
    decoded = np.asarray(Image.open("back/a.png"))
    expected = Run.load("tiny").decode(Run.load("tiny").encode(smooth_images(1)))[0]
    assert np.array_equal(decoded, expected)
    assert list(registry.registered_runs()) == []  # the package's folder is not recorded as a run
    Path("empty").mkdir()
    assert main(["decompress", "empty", "-o", "back/"]) == 1


def test_copy_makes_a_run_folder_of_ones_own(zoo: shipped.ShippedModel, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    assert main(["models", "tiny", "--copy", str(target)]) == 0
    assert _snapshot(target) == _snapshot(zoo.path)
    assert [p for _, p in registry.registered_runs()] == [target.resolve()]
    assert shipped.shipped_name(target) is None  # an ordinary, writable run
    assert main(["models", "tiny", "--copy", str(target)]) == 1  # never over an existing folder


def test_install_enforces_the_size_limits(
    zoo: shipped.ShippedModel, trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack, "MAX_FILE_BYTES", 1000)
    with pytest.raises(RunError, match=r"is [0-9.]+ MB, over"):
        pack.install_model(trained, "other", SHIPPED, CARD)
    monkeypatch.setattr(pack, "MAX_FILE_BYTES", 8 << 20)
    monkeypatch.setattr(pack, "MAX_TOTAL_BYTES", zoo.size_bytes + 1000)
    with pytest.raises(RunError, match="would take the models to"):
        pack.install_model(trained, "other", SHIPPED, CARD)
    assert sorted(shipped.registry()) == ["tiny"]  # nothing changed
    with pytest.raises(RunError, match="lacks limits"):
        pack.install_model(trained, "other", SHIPPED, {k: v for k, v in CARD.items() if k != "limits"})


def test_a_file_in_a_subfolder_ships_at_the_top(
    zoo: shipped.ShippedModel, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The denoise model ships the photo manifest that its data step wrote to WORK/photos/photos.json.
    work = tmp_path / "work"
    work.mkdir()
    for f in SHIPPED:
        (work / f).write_bytes((trained / f).read_bytes())
    (work / "photos").mkdir()
    (work / "photos" / "photos.json").write_text('{"photos": []}\n')
    model = pack.install_model(work, "other", [*SHIPPED, "photos/photos.json"], CARD)
    assert (model.path / "photos.json").read_text() == '{"photos": []}\n'
    assert "photos.json" in model.files
    (work / "prior_config.json").rename(work / "photos" / "prior_config.json")
    with pytest.raises(RunError, match="share a name"):
        pack.install_model(work, "third", [*SHIPPED, "photos/prior_config.json"], CARD)


@pytest.fixture
def hosted(zoo: shipped.ShippedModel, trained: Path, tmp_path: Path) -> shipped.ShippedModel:
    """The tiny run packed again as the hosted model "far", its files served from a local folder
    through a file:// URL (the tests never reach a network)."""
    upload = tmp_path / "upload"
    return pack.install_model(
        trained, "far", SHIPPED, CARD, url=(upload / "far").as_uri() + "/", upload=upload
    )


def test_a_hosted_model_is_listed_and_fetched_on_request(
    hosted: shipped.ShippedModel,
    trained: Path,
    vqkit_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert hosted.hosted and not hosted.fetched
    assert hosted.path == vqkit_home / "models" / "far"
    assert hosted.hosted_bytes == sum(p.stat().st_size for p in (tmp_path / "upload" / "far").iterdir())
    assert shipped.registry()["tiny"].size_bytes < pack.MAX_TOTAL_BYTES  # the packaged one is unchanged
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "hosted (vqkit models far --fetch)" in capsys.readouterr().out
    assert main(["models", "far"]) == 0  # the card comes from the registry, before any download
    assert f"| hosted at | {hosted.url} |" in capsys.readouterr().out
    with pytest.raises(RunError, match="vqkit models far --fetch"):
        Run.load("far")  # nothing is downloaded behind the user's back
    assert hosted.path not in shipped.model_folders()
    assert main(["models", "far", "--fetch"]) == 0
    out = capsys.readouterr().out
    assert "far: fetching model.safetensors" in out and "each matching the registry" in out
    run = Run.load("far")
    images = smooth_images(2)
    assert np.array_equal(run.encode(images), Run.load(trained).encode(images))
    assert shipped.shipped_name(run.path) == "far"  # read-only like a packaged model
    with pytest.raises(RunError, match="read-only"):
        shipped.refuse_writes(run.path, "a test")
    assert hosted.path in shipped.model_folders()  # decompress now finds it by fingerprint
    assert main(["models", "far", "--fetch"]) == 0  # everything present and matching: no download
    assert "fetching" not in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a usage error: it ships in the package
        main(["models", "tiny", "--fetch"])
    assert "tiny ships inside vqkit; there is nothing to fetch" in capsys.readouterr().err


def test_a_hosted_file_with_another_hash_is_not_kept(hosted: shipped.ShippedModel, tmp_path: Path) -> None:
    served = tmp_path / "upload" / "far" / "model.safetensors"
    served.write_bytes(served.read_bytes()[:-1] + b"\0")  # the server now serves a different file
    expected = hosted.files["model.safetensors"]
    with pytest.raises(RunError, match=f"expects {expected}; it was not kept"):
        shipped.fetch("far")
    assert not (hosted.path / "model.safetensors").exists()
    assert [p.name for p in hosted.path.iterdir() if p.name.startswith(".")] == []  # no partial file left
    served.unlink()
    with pytest.raises(RunError, match=r"cannot fetch model\.safetensors"):
        shipped.fetch("far")


def test_a_hosted_model_on_the_hub_goes_through_huggingface_hub(
    hosted: shipped.ShippedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for huggingface_hub that serves the uploaded folder: the test checks the calls vqkit
    # makes and that the hashes still decide, not the hub itself.
    served = tmp_path / "upload" / "far"
    calls: list[tuple[str, str, str | None]] = []

    def hf_hub_download(repo_id: str, filename: str, revision: str | None = None) -> str:
        calls.append((repo_id, filename, revision))
        return str(served / filename)

    fake = type(sys)("huggingface_hub")
    fake.hf_hub_download = hf_hub_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    doc = json.loads(shipped.REGISTRY_PATH.read_text())
    doc["models"]["far"]["url"] = "hf://vqkit/far@0123abc"
    shipped.REGISTRY_PATH.write_text(json.dumps(doc))
    model = shipped.fetch("far")
    assert model.fetched
    assert sorted(f for _, f, _ in calls) == sorted(hosted.files)
    assert {(r, v) for r, _, v in calls} == {("vqkit/far", "0123abc")}
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    (model.path / "config.json").unlink()
    with pytest.raises(RunError, match="pip install huggingface_hub"):
        shipped.fetch("far")
