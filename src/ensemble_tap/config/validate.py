"""Cross-field rules that a single field's type cannot express.

Every rule names the key path it is about, and all problems are reported together. What is
specific to a provider comes from the ``ProviderRules`` the caller passes (the provider
registry), never from a provider module: ``config/`` imports nothing above itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from ensemble_tap.config.clickhouse_addr import split_host_port
from ensemble_tap.config.creds_file import creds_file_problem
from ensemble_tap.config.models import (
    PROVIDER_KEY_RE,
    ClickHouseConfig,
    Config,
    NatsConfig,
    ProviderConfig,
    ServerConfig,
)
from ensemble_tap.config.poll_rules import poll_errors, poll_warnings
from ensemble_tap.config.provider_rules import ProviderRules, listing

MIN_DEDUP_WINDOW = 0.1


@dataclass(frozen=True, slots=True)
class Issue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def check(config: Config, providers: ProviderRules) -> tuple[list[Issue], list[Issue]]:
    """Return (errors, warnings) for a parsed config; ``providers`` knows each provider."""
    errors = [*_nats(config.nats), *_server(config.server)]
    warnings: list[Issue] = []
    for name, provider in config.providers.items():
        errors.extend(_provider(name, provider, providers))
        warnings.extend(_provider_warnings(name, provider, providers))
    errors.extend(_clickhouse(config.clickhouse))
    warnings.extend(_clickhouse_warnings(config.clickhouse))
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
    if nats.creds_file and not nats.creds_file.startswith("vault://"):
        yield from _creds_file(nats.creds_file)
    if nats.insecure_skip_verify and not nats.secure:
        yield Issue("nats.insecure_skip_verify", "requires nats.secure=true")
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(nats, key) and not nats.secure:
            yield Issue(f"nats.{key}", "requires nats.secure=true")
    if bool(nats.cert_file) != bool(nats.key_file):
        yield Issue(
            "nats.cert_file", "nats.cert_file and nats.key_file must be configured together"
        )


def _creds_file(path: str) -> Iterator[Issue]:
    """The file must hold a user JWT and its seed (read here, without connecting; the Go
    service finds out only when NATS refuses it)."""
    problem = creds_file_problem(path)
    if problem is not None:
        yield Issue("nats.creds_file", problem)


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


def _provider(name: str, provider: ProviderConfig, rules: ProviderRules) -> Iterator[Issue]:
    path = f"providers.{name}"
    if not PROVIDER_KEY_RE.match(name):
        yield Issue(
            path,
            "provider names must be lower-case letters, digits, '_' or '-' (at most 64), "
            "because the webhook route matches the lower-cased path segment",
        )
    webhook = rules.webhook(name)
    if provider.webhook_enabled and not _has_webhook_secret(webhook.secret_keys, provider):
        wanted = " or ".join(webhook.secret_keys)
        yield Issue(path, f"webhook mode requires {wanted} (base or tenant override)")
    poller = rules.poller(name)
    if provider.poll_enabled and poller is None:
        pollers = sorted(other for other in rules.names() if rules.poller(other) is not None)
        yield Issue(
            f"{path}.mode",
            f"poll mode is not supported for {name} (pollers exist for {', '.join(pollers)})",
        )
    if poller is not None:
        yield from (Issue(*problem) for problem in poll_errors(name, provider, poller))
    if provider.signature_versions is not None:
        versions = webhook.signature_versions
        if versions is None:
            supported = [
                other for other in rules.names() if rules.webhook(other).signature_versions
            ]
            yield Issue(f"{path}.signature_versions", f"is only supported for {listing(supported)}")
        else:
            unknown = sorted(set(provider.signature_versions) - versions.allowed)
            if unknown or not provider.signature_versions:
                yield Issue(
                    f"{path}.signature_versions",
                    f"must be a non-empty list of {'|'.join(sorted(versions.allowed))}",
                )


def _has_webhook_secret(keys: tuple[str, ...], provider: ProviderConfig) -> bool:
    """Whether one of ``keys`` holds a secret, in the base settings or a tenant's."""

    def has(entry: ProviderConfig | object) -> bool:
        for key in keys:
            value = getattr(entry, key, "")
            if value if isinstance(value, list) else str(value).strip():
                return True
        return False

    return has(provider) or any(has(tenant) for tenant in provider.tenants.values())


def _provider_warnings(
    name: str, provider: ProviderConfig, rules: ProviderRules
) -> Iterator[Issue]:
    path = f"providers.{name}"
    for key in ("events", "app_id", "webhook_verifier_token"):
        if getattr(provider, key):
            yield Issue(f"{path}.{key}", "is accepted for compatibility but has no effect")
    poller = rules.poller(name)
    if poller is None:
        return
    yield from (Issue(*problem) for problem in poll_warnings(name, provider, poller, rules))
    if provider.webhook_enabled and not rules.has_dedicated_webhook(name):
        yield Issue(path, "receives webhooks through the generic HMAC verifier (X-Signature)")


# ---------------------------------------------------------------------------- clickhouse

CLICKHOUSE_NATIVE_PORTS = frozenset({9000, 9440})
# Keys that only mean something for a ClickHouse server (the embedded engine ignores them).
_SERVER_ONLY_KEYS = (
    "username",
    "password",
    "secure",
    "insecure_skip_verify",
    "tls_server_name",
    "ca_file",
    "cert_file",
    "key_file",
    "dial_timeout",
    "max_open_conns",
    "max_idle_conns",
    "conn_max_lifetime",
)


def _clickhouse(ch: ClickHouseConfig) -> Iterator[Issue]:
    if ch.mode == "embedded":
        if ch.addr:
            yield Issue("clickhouse.addr", "must be empty when clickhouse.backend is embedded")
    elif ch.mode == "server":
        yield from _clickhouse_server(ch)
    else:
        return
    yield from _clickhouse_consumer(ch)


def _clickhouse_server(ch: ClickHouseConfig) -> Iterator[Issue]:
    if not ch.addr:
        yield Issue("clickhouse.addr", "is required when clickhouse.backend is server")
    elif any(not entry.strip() for entry in ch.addr.split(",")):
        yield Issue("clickhouse.addr", "must not contain empty entries")
    else:
        for entry in ch.addr.split(","):
            _, port, problem = split_host_port(entry.strip())
            if problem:
                yield Issue("clickhouse.addr", f'entry "{entry.strip()}" {problem}')
            elif port in CLICKHOUSE_NATIVE_PORTS:
                # The reference's addr was the native protocol; a native port cannot answer
                # HTTP, so the sink could never insert.
                http_port = 8443 if ch.secure else 8123
                yield Issue(
                    "clickhouse.addr",
                    f'entry "{entry.strip()}" uses port {port}, ClickHouse\'s native protocol; '
                    f"the sink speaks ClickHouse's HTTP interface: use port {http_port}",
                )
    if not ch.username.strip():
        yield Issue("clickhouse.username", "must not be empty when the sink uses a server")
    if ch.insecure_skip_verify and not ch.secure:
        yield Issue("clickhouse.insecure_skip_verify", "requires clickhouse.secure=true")
    for key in ("tls_server_name", "ca_file", "cert_file", "key_file"):
        if getattr(ch, key).strip() and not ch.secure:
            yield Issue(f"clickhouse.{key}", "requires clickhouse.secure=true")
    if any(char.isspace() for char in ch.tls_server_name):
        yield Issue("clickhouse.tls_server_name", "must not contain whitespace")
    if bool(ch.cert_file.strip()) != bool(ch.key_file.strip()):
        yield Issue(
            "clickhouse.cert_file",
            "clickhouse.cert_file and clickhouse.key_file must be configured together",
        )
    # An explicit value is checked; the default (2) is clamped to a smaller pool at runtime.
    if "max_idle_conns" in ch.model_fields_set and ch.max_idle_conns > ch.max_open_conns:
        yield Issue(
            "clickhouse.max_idle_conns",
            "must be less than or equal to clickhouse.max_open_conns",
        )


def _clickhouse_consumer(ch: ClickHouseConfig) -> Iterator[Issue]:
    backoff = ch.consumer_backoff
    if any(later < earlier for earlier, later in itertools.pairwise(backoff)):
        yield Issue("clickhouse.consumer_backoff", "must be non-decreasing")
    if backoff and ch.consumer_max_deliver > 0 and ch.consumer_max_deliver < len(backoff):
        yield Issue(
            "clickhouse.consumer_max_deliver",
            f"must be at least len(clickhouse.consumer_backoff) ({len(backoff)}) "
            "when both are set (a JetStream rule)",
        )
    if ch.batch_size > ch.consumer_max_ack_pending:
        yield Issue(
            "clickhouse.batch_size",
            "must be less than or equal to clickhouse.consumer_max_ack_pending "
            "(JetStream stops delivering before a full batch is buffered)",
        )
    # With a backoff list JetStream uses its first step as the ack wait, so the timing rules
    # are checked against that value.
    ack_key = "consumer_backoff[0]" if backoff else "consumer_ack_wait"
    ack_wait = ch.effective_ack_wait
    for key, value in (
        ("consumer_fetch_max_wait", ch.consumer_fetch_max_wait),
        ("flush_interval", ch.flush_interval),
        ("insert_timeout", ch.insert_timeout),
    ):
        if value >= ack_wait:
            yield Issue(f"clickhouse.{key}", f"must be less than clickhouse.{ack_key}")
    if ch.insert_timeout < ack_wait <= ch.insert_timeout + ch.flush_interval:
        yield Issue(
            "clickhouse.insert_timeout",
            f"clickhouse.insert_timeout + clickhouse.flush_interval must be less than "
            f"clickhouse.{ack_key}",
        )


def _clickhouse_warnings(ch: ClickHouseConfig) -> Iterator[Issue]:
    if ch.mode == "embedded":
        defaults = ClickHouseConfig()
        for key in _SERVER_ONLY_KEYS:
            if getattr(ch, key) != getattr(defaults, key):
                yield Issue(f"clickhouse.{key}", "has no effect with clickhouse.backend=embedded")
    if not ch.enabled:
        return
    if (
        ch.consumer_backoff
        and "consumer_ack_wait" in ch.model_fields_set
        and ch.consumer_ack_wait != ch.consumer_backoff[0]
    ):
        yield Issue(
            "clickhouse.consumer_ack_wait",
            "has no effect while clickhouse.consumer_backoff is set: JetStream uses "
            "consumer_backoff[0] as the ack wait",
        )
    if ch.consumer_max_deliver > 0:
        yield Issue(
            "clickhouse.consumer_max_deliver",
            "messages still failing after this many deliveries (e.g. during a long ClickHouse "
            "outage) are never inserted; 0 (unlimited) is recommended for the sink",
        )
