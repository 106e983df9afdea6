"""Poll validation (docs/polling.md, "Turning it on", and what the reference left to run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ensemble_tap.config.models import Config
from ensemble_tap.config.validate import check
from ensemble_tap.providers import REGISTRY
from tests.support.configs import load_text


def problems(providers: dict[str, Any]) -> tuple[list[str], list[str]]:
    errors, warnings = check(Config.model_validate({"providers": providers}), REGISTRY)
    return [str(e) for e in errors], [str(w) for w in warnings]


def errors_of(providers: dict[str, Any]) -> list[str]:
    return problems(providers)[0]


URL = "https://api.example.com"


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        (
            {"stripe": {"mode": "poll", "access_token": "t", "base_url": URL}},
            ["providers.stripe.mode: poll mode is not supported for stripe (pollers exist for "
             "hubspot, notion, quickbooks, salesforce)"],
        ),
        (
            {"salesforce": {"mode": "poll", "access_token": "t"}},
            ["providers.salesforce: poll target base is invalid: base_url is required"],
        ),
        (
            {"quickbooks": {"mode": "poll", "access_token": "t", "base_url": URL}},
            ["providers.quickbooks: poll target base is invalid: realm_id is required"],
        ),
        (
            {"hubspot": {"mode": "poll",
                         "tenants": {"tenant-a": {"access_token": "t", "base_url": URL}}}},
            [],
        ),
        (
            {"hubspot": {"mode": "poll", "access_token": "base-token",
                         "tenants": {"tenant-a": {"access_token": "t", "base_url": URL}}}},
            ["providers.hubspot: poll target base is invalid: base_url is required"],
        ),
        ({"notion": {"mode": "poll", "secret": "s", "base_url": URL}}, []),
        (
            {"hubspot": {"mode": "poll", "base_url": URL}},
            ["providers.hubspot: poll target base is invalid: access_token or api_key is "
             "required"],
        ),
        (
            {"notion": {"mode": "poll", "base_url": URL, "tenants": {"t1": {}}}},
            ['providers.notion.tenants.t1: poll target tenant "t1" is invalid: access_token or '
             "secret is required"],
        ),
    ],
)  # fmt: skip
def test_spec_cases(providers: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(providers) == expected


def test_oauth_refresh_makes_a_token_optional() -> None:
    oauth = {"token_url": URL + "/token", "client_id": "id", "client_secret": "cs",
             "refresh_token": "rt"}  # fmt: skip
    assert errors_of({"quickbooks": {"mode": "poll", "base_url": URL, "realm_id": "1",
                                     **oauth}}) == []  # fmt: skip
    partial = {"mode": "poll", "base_url": URL, "access_token": "t", "token_url": URL}
    assert errors_of({"notion": partial}) == [
        "providers.notion: poll target base is invalid: token_url, client_id and client_secret "
        "must be set together for OAuth refresh"
    ]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"base_url": "ftp://x"}, "base_url must be an http or https URL"),
        ({"base_url": "https://user:pw@x"}, "base_url must not contain user info (credentials)"),
        ({"base_url": "https:///path"}, "base_url must include a host"),
        ({"objects": ["Opportunity WHERE"]},
         "objects entry 'Opportunity WHERE' is not a valid salesforce object name"),
        ({"fields": ["Name; x"]}, "fields entry 'Name; x' is not a valid field name"),
        ({"query_per_page": 2001}, "query_per_page must be at most 2000 for salesforce"),
        ({"api_version": "59"}, "api_version must look like v59.0"),
        ({"token_url": "file:///etc/passwd", "client_id": "i", "client_secret": "s"},
         "token_url must be an http or https URL"),
    ],
)  # fmt: skip
def test_values_spliced_into_requests_are_checked(extra: dict[str, Any], reason: str) -> None:
    settings = {"mode": "poll", "access_token": "t", "base_url": URL, **extra}
    assert errors_of({"salesforce": settings}) == [
        f"providers.salesforce: poll target base is invalid: {reason}"
    ]


def test_page_size_limits_per_provider() -> None:
    assert errors_of({"notion": {"mode": "poll", "secret": "s", "base_url": URL,
                                 "query_per_page": 101}}) == [
        "providers.notion: poll target base is invalid: query_per_page must be at most 100 "
        "for notion"
    ]  # fmt: skip


def test_warnings_for_keys_a_poller_ignores() -> None:
    _, warnings = problems(
        {"notion": {"mode": "poll", "secret": "s", "base_url": URL, "objects": ["x"],
                    "fields": ["y"], "refresh_token": "r"}}
    )  # fmt: skip
    assert warnings == [
        "providers.notion.objects: has no effect for notion (search covers pages and databases)",
        "providers.notion.fields: has no effect for this provider (only hubspot and salesforce)",
        "providers.notion.refresh_token: has no effect without token_url, client_id and "
        "client_secret",
    ]


def test_errors_through_the_loader_name_the_tenant(tmp_path: Path) -> None:
    text = (
        "providers:\n  quickbooks:\n    mode: poll\n    base_url: https://x\n"
        "    tenants:\n      acme:\n        access_token: t\n"
    )
    from ensemble_tap.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert info.value.problems == [
        'providers.quickbooks.tenants.acme: poll target tenant "acme" is invalid: realm_id is '
        "required"
    ]
