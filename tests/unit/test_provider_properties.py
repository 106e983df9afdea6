"""Property tests: no delivery, however malformed, makes a provider fail in an unplanned way.

For every provider, random headers, bodies, signatures, clocks and settings go through
``verify()`` and ``extract()``. ``verify`` may only raise the provider errors of
``providers/base.py`` (VerificationFailed, BadPayload, SecretNotConfigured) and ``extract`` only
BadPayload. Whatever ``extract`` returns must have non-blank entity, id and action, and must turn
into a CloudEvent the official SDK accepts, or fail with NormalizeError (a time RFC3339 cannot
express, an entity type, action or entity id over its bound), and what reaches NATS headers,
subjects and ids stays bounded. Half of the generated requests are signed correctly, so the code
behind the signature check is exercised as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from cloudevents.core.formats.json import JSONFormat
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.events import (
    MAX_ID_LENGTH,
    NormalizedEvent,
    NormalizeError,
    build_envelope,
    dedup_id,
)
from ensemble_tap.providers.base import (
    BadPayload,
    SecretNotConfigured,
    VerificationFailed,
    WebhookProvider,
    WebhookRequest,
)
from ensemble_tap.providers.generic import GenericProvider
from ensemble_tap.providers.github import GitHubProvider
from ensemble_tap.providers.hubspot import HubSpotProvider, signed_url
from ensemble_tap.providers.linear import LinearProvider
from ensemble_tap.providers.shopify import ShopifyProvider
from ensemble_tap.providers.stripe import StripeProvider
from tests.unit.webhooks import NS, VECTOR_NS, hmac_b64, hmac_hex, make_request, settings

SECRET = "prop-secret"
PROVIDER_ERRORS = (VerificationFailed, BadPayload, SecretNotConfigured)
EXAMPLES = hypothesis_settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- building blocks ------------------------------------------------------------------------

# ASGI header values are latin-1 decoded bytes, so any latin-1 text can arrive.
latin1 = st.text(st.characters(codec="latin-1"), max_size=40)
interesting_headers = st.sampled_from(
    [
        "",
        " ",
        "=",
        ",",
        "sha256=",
        "sha1=",
        "sha512=",
        "sha256=deadbeef",
        "t=",
        "t=1,v1=",
        "t=+0012,v1=zz",
        "v1=00",
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "orders/paid",
        "x/ /",
        "/",
        "a. .",
        "push",
        "issues",
        "pull_request",
        "invoice.paid",
        "v1",
        "v2",
        "V3",
        "1709562120000",
        "1709562120",
        "2024-03-04T14:22:00Z",
        "9" * 19,
        "9" * 40,
        "0001-01-01T00:00:00+01:00",
        "x" * 300,  # past every id and name bound
        "a." * 200,
        "e" * 70_000,  # a 64 KiB delivery id once made nats-server refuse the headers
    ]
)
header_values = st.one_of(latin1, interesting_headers)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "  ",
            "create",
            "remove",
            "deal.creation",
            "contact.deletion",
            "2024-03-04T14:22:00Z",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+01:00",
            "1709562120000",
            1709562120000,
            1709562120,
            10**16,
            9.99e16,
        ]
    ),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def shaped(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that look like a provider's payload: its keys, with any JSON values."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, json_values))


ENTITY_KEYS = ["id", "uuid", "event_id", "object_id", "data", "timestamp", "created_at"]
STRIPE_KEYS = ["id", "type", "created", "api_version", "data"]
GITHUB_KEYS = ["id", "action", "after", "issue", "issues", "pull_request", "release"]
HUBSPOT_KEYS = [
    "eventId",
    "portalId",
    "subscriptionId",
    "occurredAt",
    "subscriptionType",
    "objectType",
    "objectId",
    "propertyName",
    "propertyValue",
]
LINEAR_KEYS = ["type", "action", "data", "id", "webhookTimestamp"]

SPECIAL_BODIES = st.sampled_from(
    [
        b"",
        b"NaN",
        b"[]",
        b"{}",
        b'{"a":"\\ud800"}',
        b'[{"objectId":"\\udfff","eventId":1}]',
        b'{"id":"\xff\xfe"}',
        b'{"id":12345678901234567890123,"n":"\xff"}',
        b"[" * 5000,
        b"[" * 2000 + b"]" * 2000,
        b'{"id":' + b"9" * 5000 + b"}",
        b'{"id":1e400}',
        b"[" * 253 + b"]" * 253,  # valid JSON one level too deep for its CloudEvent
        b'{"a":' * 1000 + b"1" + b"}" * 1000,  # orjson parsed it; nothing could write it back
        b'{"id":"' + b"i" * 300 + b'","type":"' + b"t" * 300 + b'.created"}',
        b'[{"objectId":"' + b"o" * 300 + b'","eventId":"' + b"e" * 300 + b'"}]',
        b"\xef\xbb\xbf{}",
        b"payload=%7B%7D",
        b"payload=%ZZ;a",
    ]
)


def bodies(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Raw bytes, shaped JSON (optionally with invalid UTF-8 spliced into it), or edge cases."""
    encoded = shape.map(lambda value: json.dumps(value).encode())
    spliced = st.tuples(encoded, st.integers(min_value=0)).map(
        lambda pair: (
            pair[0][: pair[1] % (len(pair[0]) + 1)]
            + b"\xff"
            + pair[0][pair[1] % (len(pair[0]) + 1) :]
        )
    )
    return st.one_of(st.binary(max_size=64), encoded, spliced, SPECIAL_BODIES)


def headers_for(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(names, header_values))


clocks = st.one_of(
    st.just(VECTOR_NS),
    st.integers(min_value=VECTOR_NS - 400 * NS, max_value=VECTOR_NS + 400 * NS),
    st.integers(min_value=0, max_value=2**62),
)
offsets = st.integers(min_value=-400, max_value=400)


def common_settings(**extra: Any) -> list[ProviderConfig]:
    return [
        settings(secret=SECRET, **extra),
        settings(secret=["retired", SECRET], **extra),
        settings(secret="other", **extra),
        settings(**extra),
    ]


# --- the properties -------------------------------------------------------------------------


def assert_only_planned_failures(
    provider: WebhookProvider, name: str, request: WebhookRequest, config: ProviderConfig
) -> None:
    try:
        provider.verify(request, config, name)
    except PROVIDER_ERRORS as exc:
        assert exc.status in (400, 401, 500)
    try:
        extractions = provider.extract(request)
    except BadPayload as exc:
        assert exc.status == 400
        return
    assert extractions
    for found in extractions:
        assert found.entity_type.strip()
        assert found.entity_id.strip()
        assert found.action.strip()
        # The digest is the dedup key's fallback: present whenever the key is missing.
        assert found.dedup_key or re.fullmatch(r"[0-9a-f]{64}", found.payload_digest)
        event = NormalizedEvent(
            provider=name,
            entity_type=found.entity_type,
            entity_id=found.entity_id,
            action=found.action,
            provider_time_ns=found.provider_time_ns or request.received_ns,
            provider_event_id=found.provider_event_id,
            tenant_id="tenant-1",
            request_id="req-1",
            changes=found.changes,
            snapshot=found.snapshot,
        )
        try:
            envelope = build_envelope(event, "ensemble.tap", tenant_scoped=True)
        except NormalizeError as exc:
            assert "time" in str(exc) or "characters" in str(exc)
            continue
        parsed = JSONFormat().read(None, envelope.body)
        assert parsed.get_id() == envelope.event_id
        # What reaches NATS headers and subjects stays bounded whatever was sent.
        assert len(envelope.event_id) <= MAX_ID_LENGTH
        assert len(dedup_id(name, "tenant-1", found.dedup_key)) <= 300
        assert len(envelope.subject) <= 400


def signed_or_not(
    request: WebhookRequest, sign: bool, signer: Callable[[WebhookRequest], dict[str, str]]
) -> WebhookRequest:
    if not sign:
        return request
    return replace(request, headers={**request.headers, **signer(request)})


@EXAMPLES
@given(
    body=bodies(shaped(ENTITY_KEYS)),
    headers=headers_for(["x-signature", "x-event-type", "x-event-action", "x-event-id"]),
    config=st.sampled_from(common_settings()),
    sign=st.booleans(),
)
def test_generic_fails_only_with_provider_errors(
    body: bytes, headers: dict[str, str], config: ProviderConfig, sign: bool
) -> None:
    request = signed_or_not(
        make_request(body, headers),
        sign,
        lambda r: {"x-signature": "sha256=" + hmac_hex(SECRET, r.body)},
    )
    assert_only_planned_failures(GenericProvider(), "acme", request, config)


@EXAMPLES
@given(
    body=bodies(shaped(STRIPE_KEYS)),
    headers=headers_for(["stripe-signature"]),
    received_ns=clocks,
    offset=offsets,
    config=st.sampled_from(common_settings()),
    sign=st.booleans(),
)
def test_stripe_fails_only_with_provider_errors(
    body: bytes,
    headers: dict[str, str],
    received_ns: int,
    offset: int,
    config: ProviderConfig,
    sign: bool,
) -> None:
    t = received_ns // NS + offset

    def signer(r: WebhookRequest) -> dict[str, str]:
        return {"stripe-signature": f"t={t},v1=" + hmac_hex(SECRET, f"{t}.".encode() + r.body)}

    request = signed_or_not(make_request(body, headers, received_ns=received_ns), sign, signer)
    assert_only_planned_failures(StripeProvider(), "stripe", request, config)


github_bodies = st.one_of(
    bodies(shaped(GITHUB_KEYS)),
    shaped(GITHUB_KEYS).map(lambda value: b"payload=" + quote(json.dumps(value)).encode()),
)


@EXAMPLES
@given(
    body=github_bodies,
    headers=headers_for(
        [
            "x-hub-signature-256",
            "x-hub-signature",
            "x-github-event",
            "x-github-delivery",
            "content-type",
        ]
    ),
    config=st.sampled_from(
        common_settings() + common_settings(signature_versions=["sha256", "sha1", "sha512"])
    ),
    algorithm=st.sampled_from(["sha256", "sha1", "sha512"]),
    sign=st.booleans(),
)
def test_github_fails_only_with_provider_errors(
    body: bytes, headers: dict[str, str], config: ProviderConfig, algorithm: str, sign: bool
) -> None:
    request = signed_or_not(
        make_request(body, headers),
        sign,
        lambda r: {"x-hub-signature-256": f"{algorithm}=" + hmac_hex(SECRET, r.body, algorithm)},
    )
    assert_only_planned_failures(GitHubProvider(), "github", request, config)


hubspot_shapes = st.one_of(shaped(HUBSPOT_KEYS), st.lists(shaped(HUBSPOT_KEYS), max_size=4))


@EXAMPLES
@given(
    body=bodies(hubspot_shapes),
    headers=headers_for(
        [
            "x-hubspot-signature-v3",
            "x-hubspot-request-timestamp",
            "x-hubspot-signature",
            "x-hubspot-signature-version",
            "x-forwarded-proto",
            "x-forwarded-host",
        ]
    ),
    host=latin1,
    raw_path=latin1,
    query_string=latin1,
    received_ns=clocks,
    offset=offsets,
    config=st.sampled_from(
        common_settings()
        + common_settings(signature_versions=["v1", "v2", "v3"])
        + [settings(client_secret=SECRET), settings(secret="x", client_secret=SECRET)]
    ),
    sign=st.booleans(),
)
def test_hubspot_fails_only_with_provider_errors(
    body: bytes,
    headers: dict[str, str],
    host: str,
    raw_path: str,
    query_string: str,
    received_ns: int,
    offset: int,
    config: ProviderConfig,
    sign: bool,
) -> None:
    timestamp = str(received_ns // 1_000_000 + offset * 1000)

    def signer(r: WebhookRequest) -> dict[str, str]:
        signed = (r.method + signed_url(r)).encode() + r.body + timestamp.encode()
        return {
            "x-hubspot-signature-v3": hmac_b64(SECRET, signed),
            "x-hubspot-request-timestamp": timestamp,
        }

    request = make_request(
        body,
        headers,
        host=host,
        raw_path=raw_path,
        query_string=query_string,
        received_ns=received_ns,
    )
    assert_only_planned_failures(
        HubSpotProvider(), "hubspot", signed_or_not(request, sign, signer), config
    )


@EXAMPLES
@given(
    body=bodies(shaped(LINEAR_KEYS)),
    headers=headers_for(["linear-signature", "linear-event", "linear-delivery"]),
    received_ns=clocks,
    config=st.sampled_from(common_settings()),
    sign=st.booleans(),
)
def test_linear_fails_only_with_provider_errors(
    body: bytes, headers: dict[str, str], received_ns: int, config: ProviderConfig, sign: bool
) -> None:
    request = signed_or_not(
        make_request(body, headers, received_ns=received_ns),
        sign,
        lambda r: {"linear-signature": hmac_hex(SECRET, r.body)},
    )
    assert_only_planned_failures(LinearProvider(), "linear", request, config)


@EXAMPLES
@given(
    body=bodies(shaped([*ENTITY_KEYS, "admin_graphql_api_id"])),
    headers=headers_for(
        [
            "x-shopify-hmac-sha256",
            "x-shopify-topic",
            "x-shopify-webhook-id",
            "x-shopify-event-id",
            "x-shopify-triggered-at",
        ]
    ),
    config=st.sampled_from(common_settings()),
    sign=st.booleans(),
)
def test_shopify_fails_only_with_provider_errors(
    body: bytes, headers: dict[str, str], config: ProviderConfig, sign: bool
) -> None:
    request = signed_or_not(
        make_request(body, headers),
        sign,
        lambda r: {"x-shopify-hmac-sha256": hmac_b64(SECRET, r.body)},
    )
    assert_only_planned_failures(ShopifyProvider(), "shopify", request, config)


# --- correctly signed requests always verify ------------------------------------------------


@EXAMPLES
@given(body=st.binary(max_size=128), secrets=st.sampled_from([[SECRET], ["old", SECRET]]))
def test_a_correct_signature_always_verifies_for_providers_without_a_clock(
    body: bytes, secrets: list[str]
) -> None:
    config = settings(secret=secrets)
    GenericProvider().verify(
        make_request(body, {"x-signature": "sha256=" + hmac_hex(SECRET, body)}), config, "acme"
    )
    GitHubProvider().verify(
        make_request(body, {"x-hub-signature-256": "sha256=" + hmac_hex(SECRET, body)}),
        config,
        "github",
    )
    ShopifyProvider().verify(
        make_request(body, {"x-shopify-hmac-sha256": hmac_b64(SECRET, body)}), config, "shopify"
    )


@EXAMPLES
@given(
    body=st.binary(max_size=128),
    # From 2001-09-09 on, epoch milliseconds have the 13 digits that mark them as milliseconds.
    received_ns=st.integers(min_value=10**18 + 301 * NS, max_value=2**62),
    offset=st.integers(min_value=-300, max_value=300),
)
def test_a_correct_signature_within_the_window_always_verifies_for_stripe_and_hubspot(
    body: bytes, received_ns: int, offset: int
) -> None:
    config = settings(secret=SECRET)
    t = received_ns // NS + offset
    stripe = {"stripe-signature": f"t={t},v1=" + hmac_hex(SECRET, f"{t}.".encode() + body)}
    StripeProvider().verify(make_request(body, stripe, received_ns=received_ns), config, "stripe")

    ms = received_ns // 1_000_000 + offset * 1000
    ms = max(ms, received_ns // 1_000_000 - 299_999)  # flooring to ms makes the past 1 ms older
    request = make_request(body, received_ns=received_ns, raw_path="/webhooks/hubspot")
    signed = (request.method + signed_url(request)).encode() + body + str(ms).encode()
    HubSpotProvider().verify(
        replace(
            request,
            headers={
                "x-hubspot-signature-v3": hmac_b64(SECRET, signed),
                "x-hubspot-request-timestamp": str(ms),
            },
        ),
        config,
        "hubspot",
    )
