"""Validation of poll targets (what the reference checked, plus what it left to fail at run
time: URL shapes, object and field names spliced into queries, page-size limits, partial OAuth
settings). The limits, names and own checks of each provider come from its poller
(``PollRules``).

Each problem is reported with the key path it is about: ``providers.<p>`` for the base target,
``providers.<p>.tenants.<key>`` for a tenant's target. The messages keep the reference's text
(``poll target base is invalid: base_url is required``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.poll_settings import bearer_token, merged_settings, oauth_enabled
from ensemble_tap.config.provider_rules import PollRules, ProviderRules, listing

Problem = tuple[str, str]
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,200}$")


def poll_errors(name: str, provider: ProviderConfig, poller: PollRules) -> Iterator[Problem]:
    if not provider.poll_enabled:
        return
    for key, settings in merged_settings(provider):
        path = f"providers.{name}" if key is None else f"providers.{name}.tenants.{key}"
        tenant = settings.tenant_id.strip()
        scope = f'tenant "{tenant}"' if tenant else "base"
        for reason in _target_problems(name, settings, poller):
            yield path, f"poll target {scope} is invalid: {reason}"


def poll_warnings(
    name: str, provider: ProviderConfig, poller: PollRules, rules: ProviderRules
) -> Iterator[Problem]:
    if not provider.poll_enabled:
        return
    path = f"providers.{name}"
    for key, message in poller.settings_warnings(provider):
        yield f"{path}.{key}", message
    if not poller.reads_fields and provider.fields:
        readers = [other for other in rules.names() if _reads_fields(rules, other)]
        yield f"{path}.fields", f"has no effect for this provider (only {listing(readers)})"
    if provider.refresh_token.strip() and not oauth_enabled(provider):
        yield (
            f"{path}.refresh_token",
            "has no effect without token_url, client_id and client_secret",
        )


def _reads_fields(rules: ProviderRules, name: str) -> bool:
    poller = rules.poller(name)
    return poller is not None and poller.reads_fields


def _target_problems(name: str, settings: ProviderConfig, poller: PollRules) -> Iterator[str]:
    base_url = settings.base_url.strip()
    if not base_url:
        yield "base_url is required"
    elif (problem := _url_problem(base_url)) is not None:
        yield f"base_url {problem}"
    for key in poller.required_keys:
        if not str(getattr(settings, key)).strip():
            yield f"{key} is required"
    yield from poller.target_problems(settings)
    oauth_keys = (settings.token_url, settings.client_id)
    if any(value.strip() for value in oauth_keys) and not oauth_enabled(settings):
        yield "token_url, client_id and client_secret must be set together for OAuth refresh"
    if settings.token_url.strip() and (problem := _url_problem(settings.token_url)) is not None:
        yield f"token_url {problem}"
    if not bearer_token(settings, poller.token_key) and not oauth_enabled(settings):
        yield f"access_token or {poller.token_key} is required"
    pattern = poller.object_name
    for obj in settings.objects or []:
        if pattern is not None and not pattern.match(obj.strip()):
            yield f"objects entry {obj!r} is not a valid {name} object name"
    if poller.reads_fields:
        for field in settings.fields or []:
            if not _FIELD_NAME.match(field.strip()):
                yield f"fields entry {field!r} is not a valid field name"
    limit = poller.max_page_size
    if settings.query_per_page is not None and settings.query_per_page > limit:
        yield f"query_per_page must be at most {limit} for {name}"


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
