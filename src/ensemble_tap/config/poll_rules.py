"""Validation of poll targets (spec config.md §5.2.4, plus what the reference left to fail at
run time: URL shapes, object and field names spliced into queries, page-size limits, partial
OAuth settings).

Each problem is reported with the key path it is about: ``providers.<p>`` for the base target,
``providers.<p>.tenants.<key>`` for a tenant's target. The messages keep the reference's text
(``poll target base is invalid: base_url is required``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from ensemble_tap.config.models import POLL_PROVIDERS, ProviderConfig
from ensemble_tap.poller.targets import (
    REQUIRED_KEYS,
    TOKEN_FALLBACK,
    merged_settings,
    oauth_enabled,
    token_of,
)

Problem = tuple[str, str]
# Names end up inside SOQL / QuickBooks queries and URL paths: no quoting tricks possible.
_OBJECT_NAME = {
    "hubspot": re.compile(r"^[A-Za-z0-9_-]{1,100}$"),
    "salesforce": re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,100}$"),
    "quickbooks": re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,100}$"),
}
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,200}$")
_FIELDS_PROVIDERS = ("hubspot", "salesforce")
_REALM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_API_VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")
MAX_PAGE_SIZE = {"hubspot": 200, "salesforce": 2000, "quickbooks": 1000, "notion": 100}


def poll_errors(name: str, provider: ProviderConfig) -> Iterator[Problem]:
    if not provider.poll_enabled or name not in POLL_PROVIDERS:
        return
    for key, settings in merged_settings(provider):
        path = f"providers.{name}" if key is None else f"providers.{name}.tenants.{key}"
        tenant = settings.tenant_id.strip()
        scope = f'tenant "{tenant}"' if tenant else "base"
        for reason in _target_problems(name, settings):
            yield path, f"poll target {scope} is invalid: {reason}"


def poll_warnings(name: str, provider: ProviderConfig) -> Iterator[Problem]:
    if not provider.poll_enabled or name not in POLL_PROVIDERS:
        return
    path = f"providers.{name}"
    if name == "notion" and provider.objects:
        yield f"{path}.objects", "has no effect for notion (search covers pages and databases)"
    if name not in _FIELDS_PROVIDERS and provider.fields:
        yield f"{path}.fields", "has no effect for this provider (only hubspot and salesforce)"
    if provider.refresh_token.strip() and not oauth_enabled(provider):
        yield (
            f"{path}.refresh_token",
            "has no effect without token_url, client_id and client_secret",
        )


def _target_problems(name: str, settings: ProviderConfig) -> Iterator[str]:
    base_url = settings.base_url.strip()
    if not base_url:
        yield "base_url is required"
    elif (problem := _url_problem(base_url)) is not None:
        yield f"base_url {problem}"
    for key in REQUIRED_KEYS.get(name, ()):
        if not str(getattr(settings, key)).strip():
            yield f"{key} is required"
    realm = settings.realm_id.strip()
    if name == "quickbooks" and realm and not _REALM_ID.match(realm):
        yield "realm_id must be letters, digits, '_' or '-'"
    oauth_keys = (settings.token_url, settings.client_id)
    if any(value.strip() for value in oauth_keys) and not oauth_enabled(settings):
        yield "token_url, client_id and client_secret must be set together for OAuth refresh"
    if settings.token_url.strip() and (problem := _url_problem(settings.token_url)) is not None:
        yield f"token_url {problem}"
    if not token_of(name, settings) and not oauth_enabled(settings):
        yield f"access_token or {TOKEN_FALLBACK[name]} is required"
    pattern = _OBJECT_NAME.get(name)
    for obj in settings.objects or []:
        if pattern is not None and not pattern.match(obj.strip()):
            yield f"objects entry {obj!r} is not a valid {name} object name"
    if name in _FIELDS_PROVIDERS:
        for field in settings.fields or []:
            if not _FIELD_NAME.match(field.strip()):
                yield f"fields entry {field!r} is not a valid field name"
    limit = MAX_PAGE_SIZE[name]
    if settings.query_per_page is not None and settings.query_per_page > limit:
        yield f"query_per_page must be at most {limit} for {name}"
    version = settings.api_version.strip()
    if name == "salesforce" and version and not _API_VERSION.match(version):
        yield "api_version must look like v59.0"


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must include a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain user info (credentials)"
    return None
