"""Pydantic models of the YAML surface.

Field names, defaults and meanings follow the reference (see docs/configuration.md). Differences:
unknown keys are errors, an explicit ``0`` is a real zero (``None`` means "use the default"),
durations need a unit, and string lists given as one string (e.g. from the environment) are
split on commas.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ensemble_tap.config.durations import parse_duration

TENANT_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROVIDER_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SUBJECT_PREFIX_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# ClickHouse identifiers we create; they are also backquoted in every statement.
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The server's rule for consumer names: printable, no whitespace, no subject/path tokens.
CONSUMER_NAME_RE = re.compile(r"^[^\s.*>/\\\x00-\x1f\x7f]{1,200}$")


def _duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, got a boolean")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(f"duration {value!r} needs a unit, e.g. {value}s or {value}ms")
    if isinstance(value, str):
        return parse_duration(value)
    return value


def _string_list(value: Any) -> Any:
    """A single string becomes a list; commas separate items (env vars carry one string)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _secret_list(value: Any) -> Any:
    """Secrets may be one string or a list (rotation). Never split: commas are legal in secrets."""
    if value is None:
        return []
    if isinstance(value, str | int):
        return [str(value)] if str(value).strip() else []
    if isinstance(value, list):
        return [str(item) for item in value if item is not None and str(item).strip()]
    return value


def _lower_list(value: Any) -> Any:
    items = _string_list(value)
    return [str(item).strip().lower() for item in items] if isinstance(items, list) else items


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
StringList = Annotated[list[str], BeforeValidator(_string_list)]
Secrets = Annotated[list[str], BeforeValidator(_secret_list)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """A key given as YAML null (``server:`` with every line commented out) is left out."""
        if isinstance(data, dict):
            return {key: item for key, item in data.items() if item is not None}
        return data


class SpoolConfig(Section):
    """``server.spool``: keep verified events on local disk while JetStream is unreachable
    (docs/reliability.md, "Local spool"). Not in the reference."""

    enabled: bool = False
    dir: str = ""  # "" = <data_dir>/spool
    # Bytes of spool files on disk; past it a delivery that cannot be published gets 503.
    max_bytes: int = Field(1_073_741_824, ge=1_048_576)
    # /readyz stays 200 while events are being spooled (the spool takes the traffic).
    ready_while_spooling: bool = True


class ServerConfig(Section):
    # A server listens on every interface unless server.host narrows it.
    host: str = "0.0.0.0"  # nosec B104
    port: int = Field(8080, ge=1, le=65535)
    # Processes serving the port (SO_REUSEPORT); one of them also runs pollers, sink, admin.
    workers: int = Field(1, ge=1, le=64)
    base_path: str = "/webhooks"
    read_timeout: PositiveDuration = 10.0
    write_timeout: PositiveDuration = 15.0
    # The reference's fixed http.Server ReadHeaderTimeout and IdleTimeout, made keys.
    read_header_timeout: PositiveDuration = 5.0
    idle_timeout: PositiveDuration = 60.0
    # On SIGTERM (after shutdown_delay), the drain: new requests still answered until none
    # arrives for a moment, in-flight ones finished, within this time (the reference's fixed
    # 10 s budget, later its ``shutdown_timeout`` key; http_connections.drain).
    shutdown_timeout: PositiveDuration = 10.0
    # On SIGTERM, how long the process keeps serving (``/readyz`` 503, new requests still
    # answered), quiet or not, before the drain above: the time a load balancer or Kubernetes
    # needs to stop routing to it (Mimir's and Loki's ``shutdown_delay``; a preStop sleep).
    shutdown_delay: Duration = Field(0.0, le=3600)
    # Connections served at once by each process (0: no limit); more are answered 503.
    max_connections: int = Field(1024, ge=0, le=1_000_000)
    max_body_size: int = Field(1_048_576, ge=1, le=64 * 1_048_576)
    trusted_proxies: StringList = []
    admin_token: str = ""
    admin_token_secondary: str = ""
    admin_token_read: str = ""
    admin_token_replay: str = ""
    admin_token_cancel: str = ""
    admin_replay_max_limit: int = Field(2000, ge=1, le=100_000)
    admin_replay_job_ttl: PositiveDuration = 86_400.0
    admin_replay_job_max_jobs: int = Field(512, ge=1, le=100_000)
    admin_replay_job_timeout: PositiveDuration = 300.0
    admin_replay_max_concurrent_jobs: int = Field(2, ge=1, le=100)
    admin_replay_store_backend: Annotated[
        Literal["memory", "sqlite", "nats"], BeforeValidator(_lower)
    ] = "memory"
    # Backend nats: a running job whose replica stops renewing its claim for this long is
    # taken over by another replica (renewed every third of it).
    admin_replay_claim_ttl: PositiveDuration = 30.0
    admin_replay_sqlite_path: str = ""
    admin_replay_require_reason: bool = False
    admin_replay_reason_min_length: int = Field(12, gt=0)
    admin_replay_max_queued_per_ip: int = Field(100, ge=0, le=100_000)
    admin_replay_max_queued_per_token: int = Field(20, ge=0, le=100_000)
    admin_rate_limit_per_sec: float = Field(5.0, gt=0)
    admin_rate_limit_burst: int = Field(20, gt=0)
    admin_allowed_cidrs: StringList = []
    admin_mtls_required: bool = False
    admin_mtls_client_cert_header: str = Field("X-Forwarded-Client-Cert", min_length=1)
    # The operator's console (/console), served wherever the admin API is.
    console_enabled: bool = True
    # A console session ends this long after sign-in (the cookie's Max-Age too).
    console_session_ttl: PositiveDuration = 8 * 3600.0
    spool: SpoolConfig = SpoolConfig()

    @field_validator("base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        path = value.strip().rstrip("/")
        if not path:
            raise ValueError("must name a path such as /webhooks (the root path is not allowed)")
        if not path.startswith("/"):
            path = "/" + path
        if any(seg in ("", ".", "..") for seg in path.split("/")[1:]):
            raise ValueError(f"{value!r} is not a clean path")
        if path.split("/")[1] in ("admin", "console", "livez", "readyz", "metrics"):
            raise ValueError(f"{value!r} collides with the service's own routes")
        return path

    @field_validator("admin_replay_claim_ttl")
    @classmethod
    def _claim_ttl(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("must be at least 1s (the claim is renewed every third of it)")
        return value

    @field_validator("console_session_ttl")
    @classmethod
    def _console_session_ttl(cls, value: float) -> float:
        if not 60.0 <= value <= 7 * 86_400.0:
            raise ValueError(
                "must be between 1m and 7d (a session that outlives a week is a token)"
            )
        return value

    @field_validator("trusted_proxies", "admin_allowed_cidrs")
    @classmethod
    def _valid_cidrs(cls, values: list[str]) -> list[str]:
        for cidr in values:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"contains invalid CIDR {cidr!r}") from None
        return values


class TenantOverride(Section):
    """Per-tenant settings; a key left out (None / blank) inherits the provider's value."""

    tenant_id: str = ""
    secret: Secrets = []
    client_secret: str = ""
    access_token: str = ""
    api_key: str = ""
    base_url: str = ""
    realm_id: str = ""
    refresh_token: str = ""
    token_url: str = ""
    client_id: str = ""
    scope: str = ""
    objects: StringList | None = None
    # Salesforce fields / HubSpot properties to read (default: all standard fields / HubSpot's
    # default property set).
    fields: StringList | None = None
    api_version: str = ""
    query_per_page: int | None = Field(None, gt=0)
    poll_interval: PositiveDuration | None = None
    poll_rate_limit_per_sec: float | None = Field(None, gt=0)
    poll_burst: int | None = Field(None, gt=0)
    poll_failure_budget: int | None = Field(None, ge=0)
    poll_circuit_break_duration: Duration | None = None
    poll_jitter_ratio: float | None = Field(None, ge=0, le=0.95)
    poll_max_pages: int | None = Field(None, ge=0)
    poll_max_requests: int | None = Field(None, ge=0)
    poll_lookback: Duration | None = None
    # How often the delete lists that cost extra requests are read (HubSpot's archived
    # list, Notion's full scans); 0: every cycle.
    poll_delete_interval: Duration | None = None


Mode = Literal["webhook", "poll", "webhook+poll"]


def _mode(value: Any) -> Any:
    if value is None:
        return "webhook"
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text in ("", "webhook"):
            return "webhook"
        if text in ("webhook+poll", "poll+webhook"):
            return "webhook+poll"
        return text
    return value


class ProviderConfig(TenantOverride):
    """One entry of ``providers``. Inherits every overridable key from TenantOverride."""

    mode: Annotated[Mode, BeforeValidator(_mode)] = "webhook"
    signature_versions: Annotated[list[str], BeforeValidator(_lower_list)] | None = None
    events: StringList = []
    app_id: str = ""
    webhook_verifier_token: str = ""
    tenants: dict[str, TenantOverride] = {}

    @property
    def webhook_enabled(self) -> bool:
        return "webhook" in self.mode

    @property
    def poll_enabled(self) -> bool:
        return "poll" in self.mode

    @field_validator("tenants", mode="before")
    @classmethod
    def _null_tenants(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: ({} if item is None else item) for key, item in value.items()}
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_keys(cls, tenants: dict[str, TenantOverride]) -> dict[str, TenantOverride]:
        for key in tenants:
            if not TENANT_KEY_RE.match(key):
                raise ValueError(
                    f"tenant key {key!r} must match {TENANT_KEY_RE.pattern} "
                    "(letters, digits, '.', '_', '-'; at most 128 characters)"
                )
        return tenants


StreamStorage = Annotated[Literal["file", "memory"], BeforeValidator(_lower)]
StreamDiscard = Annotated[Literal["old", "new"], BeforeValidator(_lower)]
StreamCompression = Annotated[Literal["none", "s2"], BeforeValidator(_lower)]


DEFAULT_DEDUP_WINDOW = 72 * 3600.0


class NatsConfig(Section):
    url: str | None = None
    stream: str = "ENSEMBLE_TAP"
    subject_prefix: str = "ensemble.tap"
    tenant_scoped_subjects: bool = False
    max_age: PositiveDuration = 168 * 3600.0
    # How long a redelivery is recognised: the providers' documented retries (Stripe's 3 days,
    # GitHub's manual redeliveries of the past 3 days, HubSpot's 10 over about a day, Shopify's
    # 4 h). nats-server keeps ≈ 236 bytes per id in memory (bench/dedup_memory.py).
    dedup_window: PositiveDuration = DEFAULT_DEDUP_WINDOW
    connect_timeout: PositiveDuration = 5.0
    reconnect_wait: PositiveDuration = 2.0
    max_reconnects: int = Field(-1, ge=-1)
    # Unset: keep trying to reach NATS while serving 503s; set: exit 1 when not connected
    # within it (docs/reliability.md).
    startup_timeout: PositiveDuration | None = None
    # Shorter than the shortest provider delivery timeout (Shopify: 5 s in all), so a
    # broker outage is answered with 503 + Retry-After before the sender gives up.
    publish_timeout: PositiveDuration = 3.0
    publish_max_retries: int = Field(3, ge=0, le=1000)
    publish_retry_backoff: PositiveDuration = 0.1
    username: str = ""
    password: str = ""
    token: str = ""
    creds_file: str = ""
    secure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    stream_replicas: int = Field(1, gt=0)
    stream_storage: StreamStorage = "file"
    stream_discard: StreamDiscard = "old"
    stream_max_consumers: int = Field(0, ge=0)
    stream_max_msgs_per_subject: int = Field(0, ge=0)
    stream_compression: StreamCompression = "none"
    stream_allow_msg_ttl: bool = False
    stream_max_msgs: int = Field(0, ge=0)
    stream_max_bytes: int = Field(0, ge=0)
    stream_max_msg_size: int = Field(0, ge=0, le=2_147_483_647)

    @model_validator(mode="after")
    def _default_window_within_max_age(self) -> NatsConfig:
        """JetStream requires ``duplicate_window <= max_age``: a shorter ``max_age`` shortens
        the default window with it (a window set beyond it is a config error)."""
        if "dedup_window" not in self.model_fields_set and self.dedup_window > self.max_age:
            object.__setattr__(self, "dedup_window", self.max_age)  # the model is frozen
        return self

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, value: str) -> str:
        name = value.strip()
        if not STREAM_NAME_RE.match(name):
            raise ValueError(
                f"{value!r} is not a valid stream name (letters, digits, '_' and '-' only)"
            )
        return name

    @field_validator("subject_prefix")
    @classmethod
    def _subject_prefix(cls, value: str) -> str:
        prefix = value.strip()
        prefix = prefix.removesuffix(".")
        if not SUBJECT_PREFIX_RE.match(prefix):
            raise ValueError(
                f"{value!r} must be dot-separated lower-case tokens of [a-z0-9_-] "
                "(no whitespace, no wildcards)"
            )
        if prefix == "ensemble" or prefix == "ensemble.dlq" or prefix.startswith("ensemble.dlq."):
            raise ValueError(f"{value!r} overlaps the dead-letter subjects ensemble.dlq.>")
        return prefix


ClickHouseBackend = Annotated[Literal["", "server", "embedded"], BeforeValidator(_lower)]


class ClickHouseConfig(Section):
    """Keys of the ClickHouse sink (docs/clickhouse.md).

    The sink runs against a ClickHouse server when ``addr`` is set (its HTTP interface) and
    against the embedded engine (chdb, data under ``<data_dir>/clickhouse``) when ``backend``
    is ``embedded``. Cross-field rules live in ``validate.py``.
    """

    addr: str = ""
    backend: ClickHouseBackend = ""
    database: str = "ensemble"
    table: str = "tap_events"
    username: str = "default"
    password: str = ""
    secure: bool = False
    insecure_skip_verify: bool = False
    tls_server_name: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    dial_timeout: PositiveDuration = 5.0
    max_open_conns: int = Field(4, gt=0)
    max_idle_conns: int = Field(2, ge=0)
    conn_max_lifetime: Duration = 1800.0
    batch_size: int = Field(500, gt=0)
    flush_interval: PositiveDuration = 2.0
    consumer_name: str = "tap_clickhouse_sink"
    consumer_fetch_batch_size: int = Field(100, gt=0)
    consumer_fetch_max_wait: PositiveDuration = 0.5
    consumer_ack_wait: PositiveDuration = 30.0
    consumer_max_ack_pending: int = Field(1000, gt=0)
    consumer_max_deliver: int = Field(0, ge=-1)
    consumer_backoff: Annotated[list[PositiveDuration], BeforeValidator(_string_list)] = []
    consumer_max_waiting: int = Field(0, ge=0)
    consumer_max_request_max_bytes: int = Field(0, ge=0)
    insert_timeout: PositiveDuration = 10.0
    retention_ttl: PositiveDuration = 8760 * 3600.0

    @field_validator("database", "table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        name = value.strip()
        if not IDENTIFIER_RE.match(name):
            raise ValueError(
                f"{value!r} must be a plain identifier: a letter or '_', then letters, "
                "digits or '_'"
            )
        return name

    @field_validator("consumer_name")
    @classmethod
    def _consumer_name(cls, value: str) -> str:
        name = value.strip()
        if not CONSUMER_NAME_RE.match(name):
            raise ValueError(
                f"{value!r} is not a valid JetStream consumer name (1-200 characters; no "
                "whitespace, '.', '*', '>', '/' or '\\')"
            )
        return name

    @field_validator("addr", "tls_server_name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def mode(self) -> Literal["server", "embedded"] | None:
        """Which backend the sink uses, or None when the sink is off."""
        if self.backend == "embedded":
            return "embedded"
        if self.addr or self.backend == "server":
            return "server"
        return None

    @property
    def enabled(self) -> bool:
        return self.mode is not None

    @property
    def effective_ack_wait(self) -> float:
        """JetStream replaces ``ack_wait`` by the first backoff step when a backoff is set."""
        return self.consumer_backoff[0] if self.consumer_backoff else self.consumer_ack_wait

    @property
    def effective_max_idle_conns(self) -> int:
        """An explicit ``max_idle_conns`` is validated; the default is clamped to the pool."""
        return min(self.max_idle_conns, self.max_open_conns)


class VaultConfig(Section):
    address: str = ""
    namespace: str = ""
    auth_method: Annotated[Literal["kubernetes", "token", "approle"], BeforeValidator(_lower)] = (
        "kubernetes"
    )
    token: str = ""
    token_file: str = ""
    kubernetes_role: str = ""
    kubernetes_mount_path: str = "kubernetes"
    kubernetes_jwt_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    approle_role_id: str = ""
    approle_secret_id_file: str = ""
    approle_mount_path: str = "approle"
    ca_file: str = ""  # else VAULT_CACERT, else the system's roots
    insecure_skip_verify: bool = False
    # Also reload secrets this often (SIGHUP always does): docs/configuration.md, "Vault".
    refresh_interval: PositiveDuration | None = None


class StateConfig(Section):
    backend: Annotated[Literal["memory", "sqlite", "nats"], BeforeValidator(_lower)] = "memory"
    sqlite_path: str = ""
    # nats: a replica that stops renewing loses its poll targets this long after its last
    # renewal; leases are renewed every third of it. At least 3 s: renewals of a second
    # apart would be busy work, and a shorter lease would expire at a GC pause.
    lease_ttl: Annotated[float, BeforeValidator(_duration), Field(ge=3.0)] = 15.0


LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]


class Config(Section):
    data_dir: str = "./data"
    log_level: LogLevel = "info"
    server: ServerConfig = ServerConfig()
    providers: dict[str, ProviderConfig] = {}
    nats: NatsConfig = NatsConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    vault: VaultConfig = VaultConfig()
    state: StateConfig = StateConfig()

    @field_validator("providers", mode="before")
    @classmethod
    def _null_providers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: ({} if item is None else item) for key, item in value.items()}
        return value
