"""setup.py's C build is all or nothing and optional: when one extension fails to compile,
whatever was already built is removed and the build goes on (the package stays pure Python,
so ``pip install`` works where the compiler does not); with ``TAP_MYPYC=required`` (make
compiled, the Dockerfile) the failure stops the build. Run with setuptools' real compiler
on two small extensions, one of which cannot compile (mypyc's would take a minute)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from setuptools import Distribution, Extension

from tests.support.hot_path import REPO


def build_command(tmp_path: Path) -> Any:
    namespace = runpy.run_path(str(REPO / "setup.py"), run_name="setup")
    good, bad = tmp_path / "good.c", tmp_path / "bad.c"
    good.write_text("int ensemble_tap_good = 1;\n")
    bad.write_text("#error this extension cannot compile\n")
    extensions = [Extension("good", [str(good)]), Extension("bad", [str(bad)])]
    distribution = Distribution({"name": "fallback", "ext_modules": extensions})
    command = namespace["OptionalBuildExt"](distribution)
    command.build_lib = str(tmp_path / "lib")
    command.build_temp = str(tmp_path / "temp")
    command.ensure_finalized()
    return command


def test_a_failing_extension_leaves_nothing_half_built(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    command = build_command(tmp_path)
    command.run()  # no exception: the build goes on without extensions
    assert "installing pure Python" in capfd.readouterr().err
    assert not list((tmp_path / "lib").glob("*.so"))  # "good" was built, then removed


def test_a_required_build_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAP_MYPYC", "required")
    command = build_command(tmp_path)
    with pytest.raises(Exception, match=r"bad\.c"):
        command.run()
