"""Config values a reference deployment may hold whose meaning differs here: each is warned
about by ``check-config`` and at start, naming the key and the difference, so a config
brought over unchanged does not silently behave otherwise (docs/migrating.md). A value that
cannot work at all is an error instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ensemble_tap.config.models import Config, ProviderConfig, TenantOverride

# ``$NAME`` without braces: the reference expanded it (shell style), this service only
# expands ``${NAME}``; ``$$`` is a literal ``$`` and not reported.
_UNBRACED = re.compile(r"\$\$|\$([A-Za-z_][A-Za-z0-9_]*)")
# Keys whose 0 the reference replaced by its default; here 0 is a real zero.
_ZERO_MEANINGS = {
    "nats.max_reconnects": "no reconnect after a disconnect; the reference read 0 as -1 "
    "(reconnect forever): set -1 for that",
    "nats.publish_max_retries": "no retry after a failed publish; the reference read 0 as 3: "
    "set 3 for that",
    "server.admin_replay_max_queued_per_ip": "no limit on queued replay jobs per IP; the "
    "reference read 0 as 100",
    "server.admin_replay_max_queued_per_token": "no limit on queued replay jobs per token; the "  # nosec B105
    "reference read 0 as 20",
}
_POLL_BUDGET_ZERO = (
    "the circuit never opens; the reference read 0 as the default, 5 consecutive failures"
)


def unbraced_variables(tree: Any, path: str = "") -> Iterator[str]:
    """``<key path>: ...`` for every string of the parsed YAML (before ``${VAR}`` expansion)
    holding ``$NAME``; only the variable's name is quoted, never the value around it."""
    if isinstance(tree, str):
        for match in _UNBRACED.finditer(tree):
            if match.group(1):
                yield (
                    f"{path}: ${match.group(1)} is kept as written (only ${{{match.group(1)}}} "
                    "is expanded; the reference expanded $NAME too)"
                )
    elif isinstance(tree, dict):
        for key, item in tree.items():
            yield from unbraced_variables(item, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from unbraced_variables(item, f"{path}[{index}]")


def zero_value_warnings(config: Config) -> Iterator[str]:
    """Keys set to 0 that the reference would have replaced by its default."""
    values = {
        "nats.max_reconnects": config.nats.max_reconnects,
        "nats.publish_max_retries": config.nats.publish_max_retries,
        "server.admin_replay_max_queued_per_ip": config.server.admin_replay_max_queued_per_ip,
        "server.admin_replay_max_queued_per_token": (
            config.server.admin_replay_max_queued_per_token
        ),
    }
    for key, value in values.items():
        if value == 0:
            yield f"{key}: 0 means {_ZERO_MEANINGS[key]}"
    for name, provider in config.providers.items():
        for path, settings in _poll_settings(f"providers.{name}", provider):
            if settings.poll_failure_budget == 0:
                yield f"{path}.poll_failure_budget: 0 means {_POLL_BUDGET_ZERO}"


EMBEDDED_BROKER = (
    "nats.url: not set, so the service runs its own embedded nats-server (for trying it out); "
    "the reference connected to nats://localhost:4222"
)


def embedded_broker_warning(config: Config) -> Iterator[str]:
    if config.nats.url is None:
        yield EMBEDDED_BROKER


def _poll_settings(path: str, provider: ProviderConfig) -> Iterator[tuple[str, TenantOverride]]:
    yield path, provider
    for key, tenant in provider.tenants.items():
        yield f"{path}.tenants.{key}", tenant
