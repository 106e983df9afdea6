"""Three rules for the webhook's hot modules, which setup.py compiles with mypyc (#17,
bench/README.md): the compiled build failed where they were broken.

- No ``await`` inside an ``except`` clause: a compiled coroutine resumed inside one loses the
  exception it handles (``TypeError('invalid exception object')``, then a crash).
- One exception type per ``except … as name`` in a function: mypyc types the name once, and
  a second clause binding another type raised ``TypeError`` there.
- A dataclass writes its ``__init__`` out (``init=False``): mypyc compiles a written one,
  while dataclass's generated ``__init__`` stays interpreted (~4,500 instructions per
  instance against ~600, six instances per webhook). Frozen ones (built once, at start)
  are exempt. And no ``slots=True``: it replaces the class with one mypyc never compiled.
"""

from __future__ import annotations

import ast

import pytest

from tests.support.hot_path import HOT_PATH, REPO

HOT_MODULES = [path.removeprefix("src/ensemble_tap/") for path in HOT_PATH]
SRC = REPO / "src" / "ensemble_tap"
Function = ast.FunctionDef | ast.AsyncFunctionDef


def functions(module: str) -> list[Function]:
    tree = ast.parse((SRC / module).read_text())
    return [node for node in ast.walk(tree) if isinstance(node, Function)]


def handlers(function: Function) -> list[ast.ExceptHandler]:
    return [node for node in ast.walk(function) if isinstance(node, ast.ExceptHandler)]


@pytest.mark.parametrize("module", HOT_MODULES)
def test_no_await_inside_an_except_clause(module: str) -> None:
    found = [
        f"{module}:{node.lineno} in {function.name}"
        for function in functions(module)
        if isinstance(function, ast.AsyncFunctionDef)
        for handler in handlers(function)
        for node in ast.walk(handler)
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith)
    ]
    assert found == []


@pytest.mark.parametrize("module", HOT_MODULES)
def test_an_except_name_has_one_type_per_function(module: str) -> None:
    for function in functions(module):
        types: dict[str, set[str]] = {}
        for handler in handlers(function):
            if handler.name and handler.type is not None:
                types.setdefault(handler.name, set()).add(ast.unparse(handler.type))
        mixed = {name: kinds for name, kinds in types.items() if len(kinds) > 1}
        assert mixed == {}, f"{module}: {function.name}"


@pytest.mark.parametrize("module", HOT_MODULES)
def test_dataclasses_write_their_init_and_have_no_slots(module: str) -> None:
    tree = ast.parse((SRC / module).read_text())
    breaches = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and any(_breach(d) for d in node.decorator_list)
    ]
    assert breaches == [], module


def _breach(decorator: ast.expr) -> bool:
    """A ``dataclass`` decorator that mypyc would leave interpreted (see the module doc)."""
    name = decorator.func if isinstance(decorator, ast.Call) else decorator
    if not (isinstance(name, ast.Name) and name.id == "dataclass"):
        return False
    options = {
        k.arg: k.value.value
        for k in (decorator.keywords if isinstance(decorator, ast.Call) else [])
        if isinstance(k.value, ast.Constant)
    }
    return options.get("slots") is True or (
        options.get("init") is not False and options.get("frozen") is not True
    )


def test_the_rules_see_a_breach() -> None:
    source = (
        "async def f():\n    try:\n        pass\n    except ValueError as e:\n        await g()\n"
        "    except KeyError as e:\n        pass\n"
    )
    [function] = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.AsyncFunctionDef)]
    awaits = [n for h in handlers(function) for n in ast.walk(h) if isinstance(n, ast.Await)]
    names = {ast.unparse(h.type) for h in handlers(function) if h.name == "e" and h.type}
    assert len(awaits) == 1 and names == {"ValueError", "KeyError"}
    for breach in ("@dataclass", "@dataclass(frozen=True, slots=True)", "@dataclass(eq=False)"):
        [decorated] = ast.parse(f"{breach}\nclass C: pass").body
        assert isinstance(decorated, ast.ClassDef) and _breach(decorated.decorator_list[0])
    [fine] = ast.parse("@dataclass(init=False)\nclass C: pass").body
    assert isinstance(fine, ast.ClassDef) and not _breach(fine.decorator_list[0])
