"""The modules setup.py compiles with mypyc (its ``HOT_PATH``), read without building."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOT_PATH: list[str] = runpy.run_path(str(REPO / "setup.py"), run_name="setup")["HOT_PATH"]


def module_name(path: str) -> str:
    """``src/ensemble_tap/bus/client.py`` → ``ensemble_tap.bus.client``."""
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")
