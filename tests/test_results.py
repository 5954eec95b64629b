"""Versioned result documents (vqkit.runs.results): written then read back equal; refused when they
are of another format, kind or a newer version, with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqkit._version import __version__
from vqkit.runs import RunError
from vqkit.runs.results import RESULT_FORMAT, RESULT_FORMAT_VERSION, read_result, result_doc, write_result

DATA = {"points": [{"entropy_model": "static", "bpp_actual": 0.3125, "psnr": 24.5}], "num_images": 3,
        "notes": ["a", "b"], "search": None, "nested": {"x": [1, 2.5, True]}}  # fmt: skip


def test_written_then_read_back_equal(tmp_path: Path) -> None:
    path = write_result(tmp_path / "run", "rd.json", "rd", DATA)
    assert path == tmp_path / "run" / "rd.json"
    result = read_result(path, "rd")
    assert result.data == DATA and result.kind == "rd" and result.vqkit_version == __version__
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["format_version"], doc["kind"]) == (RESULT_FORMAT, RESULT_FORMAT_VERSION, "rd")
    assert doc["created"] == result.created and result.created.endswith("+00:00")
    assert [p.name for p in path.parent.iterdir()] == ["rd.json"]  # no temporary file left beside it


def write_doc(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": RESULT_FORMAT_VERSION + 1}, "written by a newer vqkit"),
        ({"kind": "probe"}, "holds a 'probe' result, not 'rd'"),
        ({"format": "vqkit-run"}, "is not a vqkit result"),
        ({"format_version": "one"}, "is not a vqkit result"),
        ({"format_version": 0}, "has no format_version"),
        ({"data": [1, 2]}, "without a data object"),
    ],
)
def test_refused_with_a_clear_message(tmp_path: Path, change: dict[str, object], message: str) -> None:
    path = write_doc(tmp_path / "rd.json", {**result_doc("rd", DATA), **change})
    with pytest.raises(RunError, match=message):
        read_result(path, "rd")


def test_plain_json_and_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="is not a vqkit result"):
        read_result(write_doc(tmp_path / "a.json", DATA), "rd")  # the old unversioned layout
    (tmp_path / "b.json").write_text('{"format": "vqkit-result", ')
    with pytest.raises(RunError, match="not valid JSON"):
        read_result(tmp_path / "b.json", "rd")
    (tmp_path / "c.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(RunError, match="is not a vqkit result"):
        read_result(tmp_path / "c.json", "rd")


def test_unknown_kinds_are_not_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown result kind"):
        write_result(tmp_path, "x.json", "rate-distortion", DATA)
    assert not (tmp_path / "x.json").exists()
