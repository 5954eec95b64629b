"""Open an HTML file in headless Chromium and report what a reader would see go wrong.

A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``: the browser reads
NUL-terminated JSON commands on file descriptor 3 and writes replies and events on descriptor 4, so
no network port, websocket library or WebDriver is needed. Used by the report test and by
``benchmarks/report_screenshot.py``.

Collected as errors: console messages of type error/assert (``Runtime.consoleAPICalled``), uncaught
exceptions (``Runtime.exceptionThrown``) and browser log entries of level error (``Log.entryAdded``:
failed loads, blocked resources). Image check: every ``<img>`` is complete with ``naturalWidth > 0``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMAGES_OK = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


class BrowserError(RuntimeError):
    """The browser could not be started or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium executable: $VQKIT_CHROMIUM when set, else the first of CANDIDATES on PATH."""
    env = os.environ.get("VQKIT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    image_count: int = 0
    images_loaded: bool = False  # every <img> complete with naturalWidth > 0
    screenshot: bytes | None = None  # full-page PNG when asked for


class _Pipe:
    """Send commands, collect events; replies are matched by id."""

    def __init__(self, to_browser: int, from_browser: int, timeout: float) -> None:
        self.out, self.inp, self.timeout = to_browser, from_browser, timeout
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("the browser did not answer in time")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed its DevTools pipe")
                self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == method for e in self.events):
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif e["method"] == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            out.append("exception: " + str(details.get("exception", {}).get("description", details)))
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return out


def _move_high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def check_page(
    path: str | Path,
    *,
    screenshot: bool = False,
    width: int = 1100,
    timeout: float = 60.0,
    chromium: str | None = None,
) -> PageCheck:
    """Load ``path`` (a local HTML file) in headless Chromium; errors, image state, screenshot."""
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserError("no Chromium found (install the Debian packages chromium chromium-driver)")
    url = Path(path).resolve().as_uri()
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # Copies numbered >= 10, so moving them onto 3 and 4 in the child can never clobber each other.
    to_browser_r, from_browser_w = _move_high(to_browser_r), _move_high(from_browser_w)

    def child_fds() -> None:  # the browser expects its DevTools pipe on descriptors 3 and 4
        os.dup2(to_browser_r, 3)
        os.dup2(from_browser_w, 4)

    with tempfile.TemporaryDirectory(prefix="vqkit-chromium-") as profile:
        args = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(3, 4),
                preexec_fn=child_fds,
            )
        except OSError as e:
            os.close(to_browser_w)
            os.close(from_browser_r)
            raise BrowserError(f"cannot start {exe}: {e}") from e
        finally:
            os.close(to_browser_r)  # the browser holds its own copies on 3 and 4
            os.close(from_browser_w)
        pipe = _Pipe(to_browser_w, from_browser_r, timeout)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            pipe.events.clear()
            pipe.call("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired")
            result = PageCheck()
            count = pipe.call(
                "Runtime.evaluate",
                {"expression": "document.images.length", "returnByValue": True},
                session=session,
            )
            loaded = pipe.call(
                "Runtime.evaluate", {"expression": IMAGES_OK, "returnByValue": True}, session=session
            )
            result.image_count = int(count["result"]["value"])
            result.images_loaded = bool(loaded["result"]["value"])
            if screenshot:
                params = {"format": "png", "captureBeyondViewport": True}
                shot = pipe.call("Page.captureScreenshot", params, session=session)
                result.screenshot = base64.b64decode(shot["data"])
            result.errors = _errors(pipe.events)
            with contextlib.suppress(BrowserError):
                pipe.call("Browser.close")
            return result
        finally:
            os.close(to_browser_w)
            os.close(from_browser_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
