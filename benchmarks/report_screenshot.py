"""Screenshot of a run's HTML report for the README, taken in headless Chromium.

    python benchmarks/report_screenshot.py RUN [-o docs/report-screenshot.png] [--height 1600]

Writes RUN/report.html (vqkit report), opens it in headless Chromium (tests/browser.py), fails
when the page logs an error or an image does not load, and saves the top --height pixels of the
full-page screenshot (0: the whole page). Needs Chromium: apt-get install -y chromium chromium-driver.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the DevTools client lives with the tests that use it
from tests.browser import check_page, find_chromium  # noqa: E402

from vqkit.reports.html import write_report  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "report-screenshot.png")
    p.add_argument("--width", type=int, default=1100, help="browser window width (CSS pixels)")
    p.add_argument("--height", type=int, default=1600, help="keep the top N pixels (0: whole page)")
    a = p.parse_args()
    if find_chromium() is None:
        print("no Chromium found: apt-get install -y chromium chromium-driver", file=sys.stderr)
        return 2
    report = write_report(a.run, a.run / "report.html")
    page = check_page(report, screenshot=True, width=a.width)
    if page.errors or not page.images_loaded:
        print(
            f"report does not render cleanly: {page.errors}, images loaded: {page.images_loaded}",
            file=sys.stderr,
        )
        return 1
    assert page.screenshot is not None
    shot = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    if a.height and shot.height > a.height:
        shot = shot.crop((0, 0, shot.width, a.height))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    shot.save(a.output, optimize=True)
    print(
        f"wrote {a.output} ({shot.width}x{shot.height}) from {report} ({page.image_count} images, no errors)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
