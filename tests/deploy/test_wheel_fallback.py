"""``pip install`` works where the hot path cannot be compiled (setup.py): a build whose C
compiler fails gives a pure-Python wheel (no extension modules, nothing half-built), and
with ``TAP_MYPYC=required`` (make compiled, the Dockerfile) the same build fails instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.hot_path import REPO


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fallback") / "src"
    root.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def build(source: Path, dist: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir"]
    return subprocess.run(
        [sys.executable, "-m", *command, str(dist), "."],
        cwd=source, capture_output=True, text=True, check=False,
        env={**os.environ, "CC": "false", **env},  # a C compiler that always fails
    )  # fmt: skip


def test_a_failing_compiler_leaves_a_pure_wheel(source: Path, tmp_path: Path) -> None:
    result = build(source, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "installing pure Python" in result.stderr
    [wheel] = tmp_path.glob("ensemble_tap-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not [name for name in names if name.endswith(".so")]
    assert "ensemble_tap/ingress.py" in names


def test_required_compilation_fails_loudly(source: Path, tmp_path: Path) -> None:
    result = build(source, tmp_path, TAP_MYPYC="required")
    assert result.returncode != 0
    assert not list(tmp_path.glob("*.whl"))
