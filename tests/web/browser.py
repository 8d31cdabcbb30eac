"""The real browser for the web tests: Debian's chromium driven by Playwright.

Shared by every browser test module through the ``browser`` and ``base_url``
fixtures of tests/web/conftest.py (one browser per test session: a second
sync Playwright cannot start while one runs on the same thread). A module
marks itself with ``pytestmark = NEEDS_BROWSER``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not CHROMIUM.exists() and os.environ.get("LINTEL_REQUIRE_BROWSER"):
    # CI sets this: there a missing browser is a broken setup, not a skip.
    raise RuntimeError("LINTEL_REQUIRE_BROWSER is set but /usr/bin/chromium is missing")

NEEDS_BROWSER = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)",
)
