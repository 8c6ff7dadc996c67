"""Headless Chromium for checking the page (its tests and screenshots): the system's chromium driven by
Playwright, never a browser Playwright downloads itself."""

from __future__ import annotations

import os
import shutil

# Without the networking flags Chromium keeps trying to reach Google's services, which a machine with a
# closed network refuses, many connections at a time; --no-sandbox because CI runs as root.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
CHROMIUM_ENV = "FACESYNTH_CHROMIUM"


def chromium_path() -> str | None:
    """$FACESYNTH_CHROMIUM, else chromium (Debian's package) or google-chrome on the PATH."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if os.path.isfile(given) else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def launch(playwright):
    """A Playwright Browser running the system chromium (``playwright`` is the object sync_playwright() gives)."""
    path = chromium_path()
    if path is None:
        raise RuntimeError(f"no chromium found (apt install chromium, or set ${CHROMIUM_ENV})")
    return playwright.chromium.launch(executable_path=path, headless=True, args=FLAGS)
