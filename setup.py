"""Compiles the webhook hot path with mypyc where it can (#17, bench/README.md).

Everything else about the package is in pyproject.toml. The modules in ``HOT_PATH`` are
compiled from the same ``mypy --strict`` source when the build runs where mypy is installed
(``pip wheel --no-build-isolation`` in an environment with the dev extras: ``make compiled``,
the Dockerfile's build stage). Anywhere else (an isolated build, an editable install,
``TAP_PURE=1``) and when mypyc or the C compiler fails, the package is the same modules as
plain Python: ``pip install`` works on every machine, only slower. ``TAP_MYPYC=required``
turns those failures into build errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The webhook path and the classes it builds per request, compiled together: a module left
# out while its neighbours are compiled breaks the type checks between them
# ("WebhookRequest object expected; got WebhookRequest").
HOT_PATH = [
    "src/ensemble_tap/ingress.py",
    "src/ensemble_tap/events.py",
    "src/ensemble_tap/envelopes.py",
    "src/ensemble_tap/request_ids.py",
    "src/ensemble_tap/providers/base.py",
    "src/ensemble_tap/providers/common.py",
    "src/ensemble_tap/providers/generic.py",
    "src/ensemble_tap/providers/hmac_verifier.py",
    "src/ensemble_tap/bus/client.py",
    "src/ensemble_tap/bus/publisher.py",
    "src/ensemble_tap/bus/contract.py",
]
EDITABLE_COMMANDS = {"develop", "editable_wheel"}


def required() -> bool:
    """TAP_MYPYC=required (make compiled, the Dockerfile): a build that cannot compile fails
    instead of falling back to pure Python."""
    return os.environ.get("TAP_MYPYC") == "required"


class OptionalBuildExt(build_ext):  # type: ignore[misc]  # setuptools has no stubs here
    """A C compile that fails leaves the pure modules in place instead of failing the build.
    All or nothing: the modules' shims import one shared library, so a part is removed."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure means "stay pure"
            if required():
                raise
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            print(f"ensemble-tap: not compiled ({exc}); installing pure Python", file=sys.stderr)


def compiled_modules() -> list[Any]:
    if os.environ.get("TAP_PURE") == "1" or EDITABLE_COMMANDS & set(sys.argv):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # an isolated build: mypy is not a build requirement
        return []
    try:
        return list(mypycify(HOT_PATH, opt_level="3", target_dir="build/mypyc"))
    except (Exception, SystemExit) as exc:  # a type error or a mypyc bug
        if required():
            raise
        print(f"ensemble-tap: mypyc failed ({exc}); installing pure Python", file=sys.stderr)
        return []


if __name__ == "__main__":  # as setuptools runs it; tests read HOT_PATH without building
    setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
