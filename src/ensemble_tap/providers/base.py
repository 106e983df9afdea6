"""What every webhook provider module implements, and the errors it may raise.

A provider turns one verified HTTP delivery into one or more ``Extraction``s. It knows nothing
about NATS, HTTP responses or the CloudEvent envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.provider_rules import WebhookRules


class WebhookError(Exception):
    """Base of the errors a provider raises; ``status`` is the HTTP answer."""

    status: ClassVar[int] = 400
    public_message: ClassVar[str] = "bad request"


class VerificationFailed(WebhookError):
    """Authentication failed: missing/bad signature, timestamp outside the window."""

    status: ClassVar[int] = 401
    public_message: ClassVar[str] = "signature verification failed"


class BadPayload(WebhookError):
    """Authenticated, but the body or a required header is unusable."""

    status: ClassVar[int] = 400
    public_message: ClassVar[str] = "invalid payload"


@dataclass(init=False)
class WebhookRequest:
    """One delivery as the provider sees it. ``headers`` keys are lower-case (first value)."""

    method: str
    scheme: str
    host: str
    raw_path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes
    received_ns: int

    # Written out (init=False): mypyc compiles this one, not dataclass's generated __init__.
    def __init__(
        self,
        method: str,
        scheme: str,
        host: str,
        raw_path: str,
        query_string: str,
        headers: Mapping[str, str],
        body: bytes,
        received_ns: int,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.host = host
        self.raw_path = raw_path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.received_ns = received_ns

    def header(self, name: str) -> str:
        return self.headers.get(name, "").strip()


@dataclass(init=False)
class Extraction:
    """One event found in a delivery, before tenant, request id and envelope are added.

    ``dedup_key`` is the provider's own delivery or event id; when empty the service derives
    a stable key from ``payload_digest`` (a SHA-256 of the bytes this event came from),
    which a provider may leave empty when ``dedup_key`` is set.
    ``provider_time_ns`` of None means the delivery carries no usable time (now is used).
    ``event_id`` is the CloudEvent id if set (it must be unique per event); by default the
    envelope uses ``provider_event_id``.
    """

    entity_type: str
    entity_id: str
    action: str
    provider_event_id: str
    dedup_key: str
    payload_digest: str
    provider_time_ns: int | None
    changes: dict[str, Any] | None
    snapshot: dict[str, Any] | None
    event_id: str

    # Written out (init=False): mypyc compiles this one, not dataclass's generated __init__.
    def __init__(
        self,
        entity_type: str,
        entity_id: str,
        action: str,
        provider_event_id: str,
        dedup_key: str,
        payload_digest: str,
        provider_time_ns: int | None = None,
        changes: dict[str, Any] | None = None,
        snapshot: dict[str, Any] | None = None,
        event_id: str = "",
    ) -> None:
        self.entity_type = entity_type
        self.entity_id = entity_id
        self.action = action
        self.provider_event_id = provider_event_id
        self.dedup_key = dedup_key
        self.payload_digest = payload_digest
        self.provider_time_ns = provider_time_ns
        self.changes = changes
        self.snapshot = snapshot
        self.event_id = event_id


class WebhookProvider(WebhookRules, Protocol):
    """Verification and extraction for one provider name, and the facts config validation
    checks its settings against (``WebhookRules``: secret keys, signature versions)."""

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        """Authenticate ``request`` with the secrets in ``settings``.

        Raises VerificationFailed (401) or SecretNotConfigured (500).
        """
        ...

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        """The events of an authenticated delivery; raises BadPayload (400) when unusable.

        Needs no secrets, so a stored delivery can be extracted again later (DLQ replay).
        """
        ...


class SecretNotConfigured(WebhookError):
    """No signing secret applies to this request: an operator problem, not the caller's."""

    status: ClassVar[int] = 500
    public_message: ClassVar[str] = "provider secret not configured"
