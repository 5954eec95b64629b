"""vqkit report: one self-contained HTML file describing a run, drawn from its folder's results."""

from __future__ import annotations

from pathlib import Path

from vqkit.cli.common import parser
from vqkit.reports.html import write_report


def main(argv: list[str]) -> int:
    p = parser(
        "report",
        "Write one self-contained HTML report (pictures embedded) of a run folder. "
        "Only results already in the folder are used; nothing is recomputed.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("-o", "--output", type=Path, help="output HTML (default: RUN/report.html)")
    a = p.parse_args(argv)
    out = write_report(a.run, a.output or a.run / "report.html")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
