"""The entropy models are pure: tables in, bytes out, with no run folder, data set or file behind them.
The run-level half (fitting, reading and carrying the tables of a run folder) is vqkit.codec.fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vqkit.codec.coder import StreamEncoder, range_decode, range_encode
from vqkit.codec.entropy import PriorCoder
from vqkit.codec.tables import frequencies_from_counts

from .golden.make_golden import tiny_prior
from .test_architecture import imports_of, modules

PURE = {"vqkit.codec.entropy", "vqkit.codec.coder", "vqkit.codec.container", "vqkit.codec.tables"}


def test_the_entropy_models_import_no_run_folder_data_set_or_prior_checkpoint(tmp_path: Path) -> None:
    """Everything vqkit.codec.entropy reaches, transitively, is pure coding."""
    mods, known = modules(), set(modules())
    seen: set[str] = set()
    todo = sorted(imports_of("vqkit.codec.entropy", mods["vqkit.codec.entropy"], known))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(imports_of(name, mods[name], known))
    assert {n for n in seen if n.startswith("vqkit.codec")} == PURE - {"vqkit.codec.entropy"}, seen
    # Of the layers below the codec only the data package (container's CodecError is a DataError).
    assert not [n for n in seen if n.startswith(("vqkit.runs", "vqkit.priors", "vqkit.models"))], seen


def test_counts_in_bytes_out_and_back() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, 16)
    symbols = rng.choice(16, 300, p=(counts + 1) / (counts + 1).sum())
    table = frequencies_from_counts(counts)
    data = range_encode(symbols, table)
    assert np.array_equal(range_decode(data, table, len(symbols)), symbols)


@pytest.mark.parametrize("overlap", [False, True])
def test_a_prior_and_grids_in_bytes_out_and_back(overlap: bool) -> None:
    # Grids of three shapes, larger and smaller than the prior's 4x4 windows: no run folder anywhere.
    coder = PriorCoder(tiny_prior(16, (4, 4), seed=21).eval(), 16, overlap=overlap)
    rng = np.random.default_rng(1)
    grids = [rng.integers(0, 16, shape).astype(np.int64) for shape in [(4, 4), (6, 9), (3, 2)]]
    encoders: dict[int, StreamEncoder] = {}
    payloads: list[bytes] = [b""] * len(grids)
    for i, symbols, tables, last in coder.segments(grids):
        encoders.setdefault(i, StreamEncoder()).encode(symbols, tables)
        if last:
            payloads[i] = encoders.pop(i).finish()
    decoded = coder.decode(payloads, [g.shape for g in grids])
    assert all(np.array_equal(a, b) for a, b in zip(grids, decoded, strict=True))
