"""Entropy model 4: a grouped prior's integer network codes grids in parallel steps, bit-exactly, alone or
in any batch, and files are bound to that network."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vqkit.codec import CodecError, Coding, EntropyModel, compress_images, decode_codes, decode_codes_many
from vqkit.codec.container import GROUPED_SINCE, build, parse
from vqkit.codec.tables import code_bits, frequencies_from_int_logits
from vqkit.priors.grouped import step_map
from vqkit.priors.integer import IntegerPrior
from vqkit.priors.integer_reference import ReferencePrior
from vqkit.runs.layout import INTEGER_PRIOR_FILE

from .golden.make_golden import blob_images, grouped_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grouped_run(tmp_path_factory.mktemp("grouped") / "run", shuffle=True)  # with a code order


def mixed_images() -> list[np.ndarray]:
    """Several sizes (grids 4x4, 3x5, 6x2), so batches hold one shape each and images interleave."""
    sizes = [(16, 16), (12, 20), (16, 16), (24, 8), (16, 16), (12, 20)]
    return [blob_images(1, size, 40 + i)[0] for i, size in enumerate(sizes)]


@pytest.mark.parametrize("archive", [False, True])
def test_round_trip_is_exact_and_independent_of_the_batch(run: Path, archive: bool) -> None:
    images = mixed_images()
    result = compress_images(run, images, entropy_model="grouped", archive=archive, quality=False)
    assert result.entropy_model == "grouped"
    assert all(parse(f).entropy_model is EntropyModel.GROUPED for f in result.files)
    together = decode_codes_many(run, result.files)
    grids = [g for _, file_grids in together for g in file_grids]
    for got, want in zip(grids, result.grids, strict=True):
        np.testing.assert_array_equal(got, want)
    if not archive:  # each file alone, and in another order, decodes to the same codes
        for f, want in zip(result.files[::-1], result.grids[::-1], strict=True):
            np.testing.assert_array_equal(decode_codes(run, f)[1][0], want)


def reference_bits(run: Path, grids: np.ndarray) -> float:
    """Bits of ``grids`` (B, h, w) under the tables of the NumPy int64 reference network: hi then lo
    parts, step by step, no label (an implementation independent of the codec's)."""
    prior = IntegerPrior.load(run / INTEGER_PRIOR_FILE)
    c = prior.config
    ref = ReferencePrior(
        prior.arrays(), schedule=c.schedule, radius=c.radius, num_classes=c.num_classes, context=c.context
    )
    b, h, w = grids.shape
    steps = step_map(prior.schedule, h, w).reshape(-1)
    ids = np.full(b, prior.num_classes, dtype=np.int64)
    total = 0.0
    for s in range(prior.steps):
        pos = np.flatnonzero(steps == s)
        a = ref.step_hidden(grids, s, ids)
        x = grids.reshape(b, -1)[:, pos]
        hi, lo = ref.split(x)
        for q, part in ((ref.hi_logits(a), hi), (ref.lo_logits(a, hi), lo)):
            total += code_bits(frequencies_from_int_logits(q.reshape(-1, q.shape[-1])), part.reshape(-1))
    return total


@pytest.mark.parametrize(("k", "shuffle"), [(32, False), (36, False), (36, True)])
def test_parts_of_unequal_width_and_masked_codes_round_trip(tmp_path: Path, k: int, shuffle: bool) -> None:
    """K = 32 codes as 4 x 8 (hi and lo tables of different widths in one stream); K = 36 as 5 x 8 (its
    4 ranks past K masked), in index order and under a code order, every file decoding alone."""
    run = grouped_run(tmp_path / "run", k=k, shuffle=shuffle)
    result = compress_images(run, mixed_images(), entropy_model="grouped", quality=False)
    for data, want in zip(result.files, result.grids, strict=True):
        np.testing.assert_array_equal(decode_codes(run, data)[1][0], want)


def test_estimated_bits_are_the_integer_tables_and_payloads_follow_them(run: Path) -> None:
    images = blob_images(8, (16, 16), 9)
    result = compress_images(run, images, entropy_model="grouped", quality=False)
    want = reference_bits(run, np.stack(result.grids))
    got = sum(r.codes_bits_estimated for r in result.reports)
    assert got == pytest.approx(want, rel=1e-12)
    payload_bits = 8 * sum(r.codes_bytes for r in result.reports)
    assert want - 1 <= payload_bits <= want + 8 * 3 * len(images)  # a few bytes of termination at most


def test_auto_offers_grouped_and_files_are_bound_to_the_integer_network(run: Path, tmp_path: Path) -> None:
    coding = Coding(run)
    assert coding.candidates("auto")[0] is EntropyModel.GROUPED
    images = blob_images(2, (16, 16), 3)
    data = compress_images(coding, images, entropy_model="grouped", quality=False).files[0]
    other = grouped_run(tmp_path / "other", seed=1)  # same VQ-VAE (same seed), another prior
    assert Coding(other).fingerprint(EntropyModel.GROUPED) != coding.fingerprint(EntropyModel.GROUPED)
    with pytest.raises(CodecError, match="another model"):
        decode_codes(other, data)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    (bare / INTEGER_PRIOR_FILE).unlink()
    with pytest.raises(CodecError, match="grouped prior"):
        decode_codes(bare, data)
    assert EntropyModel.GROUPED not in Coding(bare).candidates("auto")


def test_grouped_files_exist_only_from_its_format_version(run: Path) -> None:
    coding = Coding(run)
    result = compress_images(coding, blob_images(1, (16, 16), 2), entropy_model="grouped", quality=False)
    container = parse(result.files[0])
    assert container.version >= GROUPED_SINCE
    with pytest.raises(ValueError, match="format version"):
        build(EntropyModel.GROUPED, container.fingerprint, list(container.records), [b""], version=3)
    old = bytearray(result.files[0])
    old[2] = 3  # claims version 3, which has no entropy model 4
    with pytest.raises(CodecError, match="does not exist in format version 3"):
        parse(bytes(old))


def test_compress_searches_by_default_with_a_grouped_prior(run: Path, tmp_path: Path) -> None:
    """`vqkit compress` without --search runs the light default search when the grouped prior codes the
    file (the codes it keeps are the search's), --search 0 turns it off, and a static-coded file gets
    none; the JSON records which."""
    import json

    from PIL import Image

    from vqkit.cli import main
    from vqkit.codec import default_search
    from vqkit.codec.search import DEFAULT_GROUPED, SearchConfig

    image = blob_images(1, (16, 16), 77)[0]
    Image.fromarray(image).save(tmp_path / "a.png")

    def compress(*extra: str) -> dict:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        argv = ["compress", str(run), str(tmp_path / "a.png"), "-o", str(out), "--json", str(out) + ".json"]
        assert main([*argv, "--no-progress", *extra]) == 0
        return json.loads(Path(str(out) + ".json").read_text())

    coding = Coding(run)
    assert default_search(coding) == DEFAULT_GROUPED and default_search(coding, "static") is None
    default = compress()
    expected = {**DEFAULT_GROUPED.__dict__, "lmbda": SearchConfig.lmbda}
    assert default["search"] == expected
    assert compress("--search", "0")["search"] is None
    assert compress("--entropy-model", "static")["search"] is None
    assert compress("--search", "1")["search"]["radius"] is None  # an explicit search is the exact one
    # the file the default wrote holds the search's codes, not the plain encoder's
    out = tmp_path / "kept"
    assert main(["compress", str(run), str(tmp_path / "a.png"), "-o", str(out), "--no-progress"]) == 0
    written = decode_codes(coding, (out / "a.vqk").read_bytes())[1][0]
    searched = compress_images(coding, [image], search=DEFAULT_GROUPED, quality=False).grids[0]
    plain = compress_images(coding, [image], search=None, quality=False).grids[0]
    np.testing.assert_array_equal(written, searched)
    assert not np.array_equal(written, plain)  # the search changed codes on this image
