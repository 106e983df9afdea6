"""Load a Config from YAML, ``${VAR}`` placeholders and ``TAP_*`` environment overrides.

Order: parse the YAML in memory, expand placeholders inside string values (never in the YAML
text, so a value cannot change the document's structure), apply ``TAP_*`` overrides, then
validate. All problems are collected and reported together, each with its key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ensemble_tap.config import reference_semantics, validate, vault
from ensemble_tap.config.models import Config
from ensemble_tap.config.provider_rules import ProviderRules

DEFAULT_PATH = "config.yaml"
_TOP_LEVEL_SCALARS = ("data_dir", "log_level")
_SECTIONS = ("server", "providers", "nats", "clickhouse", "vault", "state")
_PLACEHOLDER = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every issue found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"invalid config ({source}), {count}:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    source: str
    warnings: list[str] = field(default_factory=list)


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    providers: ProviderRules,
) -> LoadedConfig:
    """Load and validate. ``path=None`` uses ./config.yaml when present, else built-in defaults.

    ``providers`` is the provider registry (``ensemble_tap.providers.REGISTRY``): what each
    provider requires of its settings.
    """
    env = os.environ if environ is None else environ
    tree, source = _read_tree(path)
    problems: list[str] = []
    unbraced = list(reference_semantics.unbraced_variables(tree))
    tree = _expand(tree, env, "", problems)
    _apply_env_overrides(tree, env)
    if problems:
        raise ConfigError(source, problems)
    try:
        resolved = vault.resolve_tree(tree, env)
    except vault.VaultError as exc:
        raise ConfigError(source, exc.problems) from None
    hide = _Redactor(list(_replaced(tree, resolved)))
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(source, [hide(_describe(error)) for error in exc.errors()]) from None
    errors, warnings = validate.check(config, providers)
    if errors:
        raise ConfigError(source, [hide(str(issue)) for issue in errors])
    return LoadedConfig(
        config,
        source,
        [
            *(hide(str(issue)) for issue in warnings),
            *unbraced,
            *reference_semantics.zero_value_warnings(config),
            *reference_semantics.embedded_broker_warning(config),
        ],
    )


@dataclass(frozen=True, slots=True)
class _Redactor:
    """Takes every value read from Vault out of a message: a rule may quote the value it
    refuses (``got '…'``), and a secret in a key no name marks as one (a URL with a password)
    must not reach a log or a terminal."""

    secrets: list[str]

    def __call__(self, message: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, "<value from vault>")
        return message


def _replaced(before: Any, after: Any) -> Iterator[str]:
    """The strings of ``after`` that differ from ``before`` at the same place (what
    ``vault.resolve_tree`` put in)."""
    if isinstance(after, dict) and isinstance(before, dict):
        for key, value in after.items():
            yield from _replaced(before.get(key), value)
    elif isinstance(after, list) and isinstance(before, list) and len(after) == len(before):
        for old, new in zip(before, after, strict=True):
            yield from _replaced(old, new)
    elif isinstance(after, str) and after != before and after:
        yield after


def _read_tree(path: str | None) -> tuple[dict[str, Any], str]:
    if path is None:
        if not Path(DEFAULT_PATH).exists():
            return {}, "built-in defaults"
        path = DEFAULT_PATH
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [f"config file {path} does not exist"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read config file {path}: {exc.strerror}"]) from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from None
    if tree is None:
        return {}, path
    if not isinstance(tree, dict):
        raise ConfigError(path, ["the top level must be a mapping of sections"])
    return tree, path


def _expand(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(value, str):
        return _expand_string(value, env, path, problems)
    if isinstance(value, dict):
        return {
            key: _expand(item, env, f"{path}.{key}" if path else str(key), problems)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, env, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    return value


def _expand_string(text: str, env: Mapping[str, str], path: str, problems: list[str]) -> str:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``; ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if value:
            return value
        if op == ":-":
            return arg or ""
        if op == ":?":
            problems.append(f"{path}: environment variable {name} is required: {arg or 'unset'}")
        return ""

    return _PLACEHOLDER.sub(replace, text) if "$" in text else text


def env_override_path(name: str) -> list[str] | None:
    """Map ``TAP_SERVER_PORT`` to ``["server", "port"]``; None when not a config override.

    Reference form: ``TAP_<SECTION>_<KEY>`` (``__`` is an alias of ``_``) and
    ``TAP_PROVIDERS_<NAME>_<KEY>``. Nested form for names with ``_`` and tenant settings:
    ``TAP_PROVIDERS__<NAME>__<KEY>`` and ``TAP_PROVIDERS__<NAME>__TENANTS__<TENANT>__<KEY>``.
    """
    if not name.startswith("TAP_"):
        return None
    rest = name[4:].lower()
    if rest.startswith("providers__"):
        parts = rest.split("__")
        if len(parts) in (3, 5) and all(parts) and (len(parts) == 3 or parts[2] == "tenants"):
            return parts
        return None
    if rest in _TOP_LEVEL_SCALARS:
        return [rest]
    parts = [part for part in rest.replace("__", "_").split("_") if part]
    if len(parts) < 2 or parts[0] not in _SECTIONS:
        return None
    if parts[0] == "providers":
        if len(parts) < 3:
            return None
        return ["providers", parts[1], "_".join(parts[2:])]
    if parts[:2] == ["server", "spool"] and len(parts) > 2:  # the one nested section
        return ["server", "spool", "_".join(parts[2:])]
    return [parts[0], "_".join(parts[1:])]


def _apply_env_overrides(tree: dict[str, Any], env: Mapping[str, str]) -> None:
    for name in sorted(env):
        path = env_override_path(name)
        if path is None:
            continue
        node = tree
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[path[-1]] = env[name]


def _describe(error: Any) -> str:
    path = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, str | int | float | bool) and not _is_secret_path(path):
        message += f" (got {given!r})"
    return f"{path}: {message}"


def _is_secret_path(path: str) -> bool:
    leaf = path.rsplit(".", 1)[-1]
    return any(word in leaf for word in ("secret", "token", "password", "key"))
