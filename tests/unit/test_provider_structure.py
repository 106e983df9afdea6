"""The structure that keeps adding a provider a one-module change: who may import whom among
providers/ and poller/ (narrower than the layer contracts in pyproject.toml, which make lint
checks), and keyword arguments where positions are easy to mix up."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "ensemble_tap"


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def imported(path: Path) -> Iterator[str]:
    """Every ``ensemble_tap`` module ``path`` imports, at any depth (functions and
    TYPE_CHECKING blocks included); ``from package import module`` names the module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def internal(path: Path) -> set[str]:
    found = {name for name in imported(path) if name.startswith("ensemble_tap.")}
    # ``from pkg.module import Name`` yields ``pkg.module.Name``: keep real modules only.
    return {name for name in found if _is_module(name)}


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


def _names(paths: list[Path]) -> list[str]:
    return [path.name for path in paths]


@pytest.mark.parametrize("path", modules("providers"), ids=_names(modules("providers")))
def test_providers_never_import_the_poller_or_anything_above(path: Path) -> None:
    allowed = ("ensemble_tap.providers", "ensemble_tap.config", "ensemble_tap.events",
               "ensemble_tap.state")  # fmt: skip
    assert {name for name in internal(path) if not name.startswith(allowed)} == set()


@pytest.mark.parametrize("path", modules("poller"), ids=_names(modules("poller")))
def test_the_poller_sees_providers_only_through_the_registry_and_the_contract(
    path: Path,
) -> None:
    reached = {name for name in internal(path) if name.startswith("ensemble_tap.providers")}
    assert reached <= {"ensemble_tap.providers", "ensemble_tap.providers.contract"}


def test_poller_http_does_not_import_oauth() -> None:
    assert "ensemble_tap.poller.oauth" not in internal(PACKAGE / "poller" / "http.py")


# A function with more than MAX_PARAMETERS parameters (self/cls not counted) takes the ones
# past the third by keyword.
MAX_PARAMETERS = 3
MAX_POSITIONAL = 3
# Callbacks whose positional signature is a declared callable type of their caller.
CALLBACKS = {
    # a bus.client.DirectHandler: called positionally for every delivery of the sink
    "jetstream.py _on_delivery",
}
KEYWORD_ONLY_SCOPE = [
    *modules("admin"),
    *modules("sink"),
    *modules("poller"),
    PACKAGE / "providers" / "hmac_verifier.py",
]


def positional_overflow(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        arguments = node.args
        positional = [
            arg.arg
            for arg in (*arguments.posonlyargs, *arguments.args)
            if arg.arg not in ("self", "cls")
        ]
        total = len(positional) + len(arguments.kwonlyargs)
        exempt = f"{path.name} {node.name}" in CALLBACKS
        if total > MAX_PARAMETERS and len(positional) > MAX_POSITIONAL and not exempt:
            yield f"{path.name}:{node.lineno} {node.name}({', '.join(positional)}, …)"


def test_long_signatures_take_keyword_arguments() -> None:
    assert [found for path in KEYWORD_ONLY_SCOPE for found in positional_overflow(path)] == []


def test_the_keyword_rule_finds_a_long_positional_signature(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def ok(a, b, *, c, d): ...\n"
        "def short(a, b, c): ...\n"
        "class C:\n"
        "    def bad(self, a, b, c, d=1): ...\n",
        encoding="utf-8",
    )
    assert list(positional_overflow(sample)) == ["sample.py:4 bad(a, b, c, d, …)"]
