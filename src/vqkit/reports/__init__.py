"""Reports drawn from a run folder's versioned results and pictures: plots, tables and one
self-contained HTML file (tests/browser.py checks in headless Chromium that it renders)."""

from vqkit.reports.html import build_report, write_report

__all__ = ["build_report", "write_report"]
