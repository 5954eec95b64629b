"""Reports drawn from a run folder's JSON results and pictures: plots, one self-contained HTML file,
and a headless-browser check that the HTML renders."""

from vqkit.reports.html import build_report, write_report

__all__ = ["build_report", "write_report"]
