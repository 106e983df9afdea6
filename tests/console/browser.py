"""Driving Debian's Chromium with Playwright for the console's browser tests.

Playwright's own browser download cannot work here: the tests launch ``/usr/bin/chromium``
(``executable_path``) and skip, saying why, where it is absent (``make test`` installs it
when it runs as root). Screenshots go to the test's temp dir, or to
``$TAP_CONSOLE_SCREENSHOTS`` (``make console-screenshots``: docs/console/).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("TAP_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS_ENV = "TAP_CONSOLE_SCREENSHOTS"


def chromium_or_skip() -> str:
    """The Chromium binary; skips the calling module when it is not installed."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(
            f"Chromium is not installed ({CHROMIUM}): the console's browser tests need "
            "Debian's chromium package (apt-get install chromium; make test installs it "
            "when run as root)",
            allow_module_level=True,
        )
    return CHROMIUM


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get(SCREENSHOTS_ENV, "")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
