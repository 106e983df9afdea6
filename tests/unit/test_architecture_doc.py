"""docs/architecture.md's layer list is the import-linter contract that make lint checks, and
every module of the package has a layer (a new module must be placed before it can land)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ensemble_tap"


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [layers] = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    assert layers["containers"] == ["ensemble_tap"]
    assert "ignore_imports" not in layers  # the doc says there are no exceptions
    return list(layers["layers"])


def documented_layers(text: str) -> list[str]:
    found = re.search(r"^## Layers\n.*?^```layers\n(.*?)^```", text, re.M | re.S)
    assert found, "docs/architecture.md has no ```layers block under ## Layers"
    return found.group(1).splitlines()


def members(layer: str) -> list[str]:
    return [name.strip() for name in layer.split("|")]


def test_the_documented_layers_are_the_contract() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert documented_layers(text) == contract_layers()


def test_every_module_has_a_layer() -> None:
    placed = [name for layer in contract_layers() for name in members(layer)]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    modules = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert modules == set(placed)


def test_a_changed_layer_list_is_noticed() -> None:
    """The comparison sees an edit: the doc with two layers swapped is not the contract."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    swapped = text.replace("\nbus\nstate\n", "\nstate\nbus\n", 1)
    assert swapped != text
    assert documented_layers(swapped) != contract_layers()
