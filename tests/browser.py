"""Headless Chromium for the tests that look at a page as a reader's browser draws it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


BROWSER = _browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser installed (the Makefile's test setup installs "
    "Debian's chromium when apt is available)",
)

# every host name resolves to nothing: the page gets no network beyond file:// and 127.0.0.1
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def chromium(
    url: str, profile: Path, extra: list[str], wanted: list[str]
) -> subprocess.CompletedProcess:
    """Headless chromium (flags measured to work as root and offline); one retry with a longer
    virtual-time budget when the page had not finished drawing (a loaded machine is slow)."""
    for attempt, budget in enumerate((15000, 40000)):
        cmd = [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}-{attempt}",
            f"--virtual-time-budget={budget}",
            *extra,
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        if proc.returncode == 0 and all(w in proc.stdout for w in wanted):
            break
    return proc
