"""Compiles the webhook hot path with mypyc where it can (#17, bench/README.md).

Everything else about the package is in pyproject.toml. The modules in ``HOT_PATH`` are
compiled from the same ``mypy --strict`` source when the build runs where mypy is installed
(``pip wheel --no-build-isolation`` in an environment with the dev extras: ``make compiled``,
the Dockerfile's build stage). Anywhere else (an isolated build, an editable install,
``TAP_PURE=1``) and when the C compiler fails, the package is the same modules as plain
Python: ``pip install`` works on every machine, only slower.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# Compiled together: a module left out while its neighbours are compiled breaks the type
# checks between them ("WebhookRequest object expected; got WebhookRequest").
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
]
EDITABLE_COMMANDS = {"develop", "editable_wheel"}


class OptionalBuildExt(build_ext):  # type: ignore[misc]  # setuptools has no stubs here
    """A C compile that fails leaves the pure modules in place instead of failing the build."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"ensemble-tap: not compiled ({exc}); installing pure Python", file=sys.stderr)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"ensemble-tap: {ext.name} not compiled ({exc})", file=sys.stderr)


def compiled_modules() -> list[Any]:
    if os.environ.get("TAP_PURE") == "1" or EDITABLE_COMMANDS & set(sys.argv):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # an isolated build: mypy is not a build requirement
        return []
    return list(mypycify(HOT_PATH, opt_level="3"))


if __name__ == "__main__":  # as setuptools runs it; tests read HOT_PATH without building
    setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
