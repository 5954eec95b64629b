"""vqkit report: one self-contained HTML file describing a run, drawn from its folder's results."""

from __future__ import annotations

from pathlib import Path

from vqkit.cli.common import add_run, parser
from vqkit.reports.html import write_report
from vqkit.runs import layout, shipped


def main(argv: list[str]) -> int:
    p = parser(
        "report",
        "Write one self-contained HTML report (pictures embedded) of a run folder. "
        "Only results vqkit commands left in the folder are used; nothing is recomputed.",
    )
    add_run(p)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"output HTML (default: RUN/{layout.REPORT_FILE}; for a shipped model "
        f"MODEL-{layout.REPORT_FILE} in the working directory)",
    )
    a = p.parse_args(argv)
    out = write_report(a.run, a.output or shipped.output_path(a.run, layout.REPORT_FILE))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
