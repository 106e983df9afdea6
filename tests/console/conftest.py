from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.console.browser import chromium_or_skip, screenshot_dir


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where this test saves its screenshots (one PNG per page it shows)."""
    return screenshot_dir(tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium of Debian's package, driven by Playwright's async API."""
    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()
