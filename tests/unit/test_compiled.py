"""The compiled build (``make test-compiled``, setup.py): every hot-path module is the
mypyc-compiled extension, not its Python source, so the suite run with it tests the
compiled code. In the ordinary (editable, pure) run the same modules must be plain Python."""

from __future__ import annotations

import importlib
import importlib.machinery
import os

import pytest

from tests.support.hot_path import HOT_PATH, REPO, module_name

COMPILED = os.environ.get("TAP_EXPECT_COMPILED") == "1"


@pytest.mark.parametrize("path", HOT_PATH)
def test_the_hot_path_module_is_the_expected_build(path: str) -> None:
    module = importlib.import_module(module_name(path))
    file = module.__file__ or ""
    extension = file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert extension == COMPILED, f"{module.__name__} from {file}"


def test_every_hot_path_module_exists() -> None:
    for path in HOT_PATH:
        assert (REPO / path).is_file(), path
