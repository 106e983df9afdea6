"""Cross-field rules that a single field's type cannot express.

Every rule names the key path it is about, and all problems are reported together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from ensemble_tap.config.models import (
    DEDICATED_WEBHOOK_PROVIDERS,
    POLL_PROVIDERS,
    PROVIDER_KEY_RE,
    Config,
    NatsConfig,
    ProviderConfig,
    ServerConfig,
)

SIGNATURE_VERSIONS = {
    "hubspot": ({"v1", "v2", "v3"}, ["v3"]),
    "github": ({"sha256", "sha1", "sha512"}, ["sha256"]),
}
MIN_DEDUP_WINDOW = 0.1


@dataclass(frozen=True, slots=True)
class Issue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def check(config: Config) -> tuple[list[Issue], list[Issue]]:
    """Return (errors, warnings) for a parsed config."""
    errors = [*_nats(config.nats), *_server(config.server)]
    warnings: list[Issue] = []
    for name, provider in config.providers.items():
        errors.extend(_provider(name, provider))
        warnings.extend(_provider_warnings(name, provider))
    if config.clickhouse.enabled:
        errors.append(
            Issue(
                "clickhouse.addr",
                "the ClickHouse sink is not available in this release; "
                "leave clickhouse.addr and clickhouse.backend empty",
            )
        )
    errors.extend(_vault_refs(config))
    return errors, warnings


def _nats(nats: NatsConfig) -> Iterator[Issue]:
    if nats.url is not None:
        yield from _nats_urls(nats.url)
    if nats.dedup_window > nats.max_age:
        yield Issue("nats.dedup_window", "must be less than or equal to nats.max_age")
    if nats.dedup_window < MIN_DEDUP_WINDOW:
        yield Issue("nats.dedup_window", "must be at least 100ms (a JetStream limit)")
    if nats.password and not nats.username:
        yield Issue("nats.password", "requires nats.username")
    if nats.token and (nats.username or nats.password):
        yield Issue("nats.token", "cannot be combined with nats.username or nats.password")
    if nats.creds_file and (nats.token or nats.username or nats.password):
        yield Issue(
            "nats.creds_file", "cannot be combined with nats.token, nats.username, or nats.password"
        )
    if nats.insecure_skip_verify and not nats.secure:
        yield Issue("nats.insecure_skip_verify", "requires nats.secure=true")
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(nats, key) and not nats.secure:
            yield Issue(f"nats.{key}", "requires nats.secure=true")
    if bool(nats.cert_file) != bool(nats.key_file):
        yield Issue(
            "nats.cert_file", "nats.cert_file and nats.key_file must be configured together"
        )


def _nats_urls(url: str) -> Iterator[Issue]:
    if not url.strip():
        yield Issue("nats.url", "must not be empty (leave it out to run the embedded server)")
        return
    schemes: set[str] = set()
    for index, raw in enumerate(url.split(",")):
        endpoint = raw.strip()
        if not endpoint:
            yield Issue("nats.url", f"contains empty endpoint at index {index}")
            continue
        try:
            parts = urlsplit(endpoint)
            port = parts.port
        except ValueError as exc:
            yield Issue("nats.url", f'endpoint "{endpoint}" is invalid: {exc}')
            continue
        scheme = parts.scheme.lower()
        if scheme not in ("nats", "tls", "ws", "wss"):
            yield Issue(
                "nats.url",
                f'endpoint "{endpoint}" has unsupported scheme "{parts.scheme}" '
                "(expected one of nats|tls|ws|wss)",
            )
            continue
        schemes.add("ws" if scheme in ("ws", "wss") else "nats")
        if not parts.hostname:
            yield Issue("nats.url", f'endpoint "{endpoint}" must include a host')
        if scheme in ("nats", "tls") and parts.path not in ("", "/"):
            yield Issue(
                "nats.url", f'endpoint "{endpoint}" must not include a path for {scheme} scheme'
            )
        if port is not None and not 1 <= port <= 65535:
            yield Issue("nats.url", f'endpoint "{endpoint}" has invalid port {port}')
    if len(schemes) > 1:
        yield Issue("nats.url", "must not mix websocket and non-websocket endpoints")


def _server(server: ServerConfig) -> Iterator[Issue]:
    if server.admin_token_secondary and not server.admin_token:
        yield Issue("server.admin_token_secondary", "requires server.admin_token")
    if server.admin_token and server.admin_token == server.admin_token_secondary:
        yield Issue(
            "server.admin_token_secondary",
            "server.admin_token and admin_token_secondary must differ",
        )


def _provider(name: str, provider: ProviderConfig) -> Iterator[Issue]:
    path = f"providers.{name}"
    if not PROVIDER_KEY_RE.match(name):
        yield Issue(
            path,
            "provider names must be lower-case letters, digits, '_' or '-' (at most 64), "
            "because the webhook route matches the lower-cased path segment",
        )
    if provider.webhook_enabled and not _has_webhook_secret(name, provider):
        wanted = "secret or client_secret" if name == "hubspot" else "secret"
        yield Issue(path, f"webhook mode requires {wanted} (base or tenant override)")
    if provider.poll_enabled and name not in POLL_PROVIDERS:
        yield Issue(
            f"{path}.mode",
            f"poll mode is not supported for {name} (pollers exist for "
            f"{', '.join(sorted(POLL_PROVIDERS))})",
        )
    if provider.signature_versions is not None:
        allowed = SIGNATURE_VERSIONS.get(name)
        if allowed is None:
            yield Issue(f"{path}.signature_versions", "is only supported for hubspot and github")
        else:
            unknown = sorted(set(provider.signature_versions) - allowed[0])
            if unknown or not provider.signature_versions:
                yield Issue(
                    f"{path}.signature_versions",
                    f"must be a non-empty list of {'|'.join(sorted(allowed[0]))}",
                )


def _has_webhook_secret(name: str, provider: ProviderConfig) -> bool:
    def has(entry: ProviderConfig | object) -> bool:
        secrets = getattr(entry, "secret", [])
        client_secret = getattr(entry, "client_secret", "")
        return bool(secrets) or (name == "hubspot" and bool(client_secret.strip()))

    return has(provider) or any(has(tenant) for tenant in provider.tenants.values())


def _provider_warnings(name: str, provider: ProviderConfig) -> Iterator[Issue]:
    path = f"providers.{name}"
    for key in ("events", "app_id", "webhook_verifier_token"):
        if getattr(provider, key):
            yield Issue(f"{path}.{key}", "is accepted for compatibility but has no effect")
    if provider.poll_enabled:
        yield Issue(
            f"{path}.mode",
            "polling is not available in this release; only the webhook route is served",
        )
    if (
        provider.webhook_enabled
        and name not in DEDICATED_WEBHOOK_PROVIDERS
        and name in (POLL_PROVIDERS)
    ):
        yield Issue(path, "receives webhooks through the generic HMAC verifier (X-Signature)")


def _vault_refs(config: Config) -> Iterator[Issue]:
    def walk(value: object, path: str) -> Iterator[str]:
        if isinstance(value, str):
            if value.strip().startswith("vault://"):
                yield path
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")

    for path in walk(config.model_dump(), ""):
        yield Issue(path, "vault:// references are not supported in this release")
