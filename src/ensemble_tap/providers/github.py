"""GitHub webhooks: ``X-Hub-Signature-256`` over the raw body, JSON or form-encoded payloads.

SHA-1 (``X-Hub-Signature``) and SHA-512 are refused unless listed in the provider's
``signature_versions``; GitHub always sends the SHA-256 header.

The dedup key and CloudEvent id are ``<X-GitHub-Delivery>:<X-GitHub-Hook-ID>``;
``data.provider_event_id`` is the delivery GUID alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from ensemble_tap.config.models import ProviderConfig
from ensemble_tap.config.provider_rules import SignatureVersions
from ensemble_tap.providers.base import BadPayload, Extraction, VerificationFailed, WebhookRequest
from ensemble_tap.providers.common import (
    digest,
    extract_entity_id,
    parse_json,
    require_secrets,
    to_string,
)
from ensemble_tap.providers.contract import Provider
from ensemble_tap.providers.hmac_verifier import decode_signature, matches


class GitHubProvider:
    secret_keys = ("secret",)
    # GitHub always sends the SHA-256 header; the others only when listed.
    signature_versions = SignatureVersions(frozenset({"sha256", "sha1", "sha512"}), ("sha256",))

    def verify(self, request: WebhookRequest, settings: ProviderConfig, provider: str) -> None:
        secrets = require_secrets(settings.secret, provider)
        allowed = tuple(settings.signature_versions or self.signature_versions.default)
        verify_signature(request, secrets, allowed)

    def extract(self, request: WebhookRequest) -> list[Extraction]:
        event = request.header("x-github-event").lower()
        if not event:
            raise BadPayload("missing X-GitHub-Event header")
        payload = decode_payload(request)
        delivery = request.header("x-github-delivery")
        key = delivery_key(request, delivery)
        return [
            Extraction(
                entity_type=event,
                entity_id=entity_id(event, payload),
                action=action_of(event, payload),
                provider_event_id=delivery,
                dedup_key=key,
                payload_digest=digest(request.body),
                snapshot=payload,
                event_id=key,
            )
        ]


def delivery_key(request: WebhookRequest, delivery: str) -> str:
    """The delivery GUID and the hook it came through: GitHub sends an event with one GUID to
    every hook subscribed to it (a repository hook and an app each get their own payload),
    and a redelivery through the same hook keeps both. Empty without a GUID (digest dedup)."""
    if not delivery:
        return ""
    hook = request.header("x-github-hook-id")
    if hook:
        return f"{delivery}:{hook}"
    target_id = request.header("x-github-hook-installation-target-id")
    if target_id:
        target_type = request.header("x-github-hook-installation-target-type")
        return f"{delivery}:{target_type}:{target_id}"
    return delivery


# Events without an ``action`` that name what happened to their ref.
REF_EVENT_ACTIONS = {"create": "created", "delete": "deleted"}


def action_of(event: str, payload: dict[str, Any]) -> str:
    """The payload's ``action``; a push has none: the ref was ``created``, ``deleted`` or
    ``updated`` (new commits, or a forced move); ``create``/``delete`` are ``created``/
    ``deleted``; any other event without one is ``updated``."""
    if event == "push":
        if payload.get("deleted") is True:
            return "deleted"
        return "created" if payload.get("created") is True else "updated"
    if event in REF_EVENT_ACTIONS:
        return REF_EVENT_ACTIONS[event]
    action = payload.get("action")
    if isinstance(action, str) and action.strip():
        return action.strip().lower()
    return "updated"


def verify_signature(
    request: WebhookRequest, secrets: Sequence[str], allowed: tuple[str, ...]
) -> None:
    header = request.header("x-hub-signature-256")
    if not header and "sha1" in allowed:
        header = request.header("x-hub-signature")
    if not header:
        raise VerificationFailed("missing signature")
    algorithm, sep, value = header.partition("=")
    if not sep:
        raise VerificationFailed("error parsing signature")
    if algorithm not in ("sha1", "sha256", "sha512"):
        raise VerificationFailed(f'unknown hash type prefix: "{algorithm}"')
    if algorithm not in allowed:
        raise VerificationFailed(f"{algorithm} signatures are not enabled (signature_versions)")
    signature = decode_signature(value, "hex")
    if not matches(secrets, request.body, signature=signature, algorithm=algorithm):
        raise VerificationFailed("payload signature check failed")


def decode_payload(request: WebhookRequest) -> dict[str, Any]:
    media_type = request.header("content-type").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        value = parse_json(request.body)
    elif media_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(
                request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True
            )
        except (ValueError, UnicodeDecodeError):
            raise BadPayload("form body is not valid") from None
        value = parse_json(form.get("payload", [""])[0].encode())
    elif not media_type:
        raise BadPayload("missing Content-Type header")
    else:
        raise BadPayload(f'webhook request has unsupported Content-Type "{media_type}"')
    if not isinstance(value, dict):
        raise BadPayload("github payload must be a JSON object")
    return value


# Per event (GitHub's "Webhook events and payloads"), where the id of the object the event is
# about sits in the payload: a comment event is about the comment, a review event about the
# review, not about the issue or pull request they belong to.
OBJECT_ID_PATHS: dict[str, tuple[str, ...]] = {
    "branch_protection_configuration": ("repository", "id"),
    "branch_protection_rule": ("rule", "id"),
    "check_run": ("check_run", "id"),
    "check_suite": ("check_suite", "id"),
    "commit_comment": ("comment", "id"),
    "custom_property": ("definition", "property_name"),
    "custom_property_values": ("repository", "id"),
    "deploy_key": ("key", "id"),
    "deployment": ("deployment", "id"),
    "deployment_protection_rule": ("deployment", "id"),
    "deployment_review": ("workflow_run", "id"),
    "deployment_status": ("deployment_status", "id"),
    "discussion": ("discussion", "id"),
    "discussion_comment": ("comment", "id"),
    "fork": ("forkee", "id"),
    "github_app_authorization": ("sender", "id"),
    "gollum": ("repository", "id"),
    "installation": ("installation", "id"),
    "installation_repositories": ("installation", "id"),
    "installation_target": ("account", "id"),
    "issue_comment": ("comment", "id"),
    "issue_dependencies": ("blocked_issue", "id"),
    "issues": ("issue", "id"),
    "label": ("label", "id"),
    "marketplace_purchase": ("marketplace_purchase", "account", "id"),
    "member": ("member", "id"),
    "membership": ("member", "id"),
    "merge_group": ("merge_group", "head_sha"),
    "meta": ("hook_id",),
    "milestone": ("milestone", "id"),
    "org_block": ("blocked_user", "id"),
    "organization": ("organization", "id"),
    "package": ("package", "id"),
    "page_build": ("id",),
    "personal_access_token_request": ("personal_access_token_request", "id"),
    "ping": ("hook_id",),
    "project": ("project", "id"),
    "project_card": ("project_card", "id"),
    "project_column": ("project_column", "id"),
    "projects_v2": ("projects_v2", "id"),
    "projects_v2_item": ("projects_v2_item", "id"),
    "projects_v2_status_update": ("projects_v2_status_update", "id"),
    "public": ("repository", "id"),
    "pull_request": ("pull_request", "id"),
    "pull_request_review": ("review", "id"),
    "pull_request_review_comment": ("comment", "id"),
    "pull_request_review_thread": ("thread", "node_id"),
    "registry_package": ("registry_package", "id"),
    "release": ("release", "id"),
    "repository": ("repository", "id"),
    "repository_advisory": ("repository_advisory", "ghsa_id"),
    "repository_dispatch": ("repository", "id"),
    "repository_import": ("repository", "id"),
    "repository_ruleset": ("repository_ruleset", "id"),
    "repository_vulnerability_alert": ("alert", "id"),
    "secret_scanning_scan": ("repository", "id"),
    "security_advisory": ("security_advisory", "ghsa_id"),
    "security_and_analysis": ("repository", "id"),
    "sponsorship": ("sponsorship", "node_id"),
    "star": ("repository", "id"),
    "status": ("id",),
    "sub_issues": ("sub_issue", "id"),
    "team": ("team", "id"),
    "team_add": ("team", "id"),
    "watch": ("repository", "id"),
    "workflow_job": ("workflow_job", "id"),
    "workflow_run": ("workflow_run", "id"),
}
# Alerts numbered per repository (``alert.number``, no global id): ``<owner>/<repo>/<number>``.
REPOSITORY_NUMBERED_ALERTS = frozenset(
    {
        "code_scanning_alert",
        "dependabot_alert",
        "secret_scanning_alert",
        "secret_scanning_alert_location",
    }
)
# ``create``/``delete`` name a branch or tag without its ``refs/…`` prefix.
REF_PREFIXES = {"branch": "refs/heads/", "tag": "refs/tags/"}


def entity_id(event: str, payload: dict[str, Any]) -> str:
    """The id of the object the event is about (OBJECT_ID_PATHS). A push, ``create`` and
    ``delete`` are about a ref: ``<owner>/<repo>/refs/heads/<branch>`` (or ``refs/tags/…``),
    the same entity for the three. Events not in the table: a top-level id, then
    ``payload[<event>]`` (singular too), then ``pull_request``; else ``unknown``."""
    found = ""
    path = OBJECT_ID_PATHS.get(event)
    if path is not None:
        found = to_string(value_at(payload, path))
    elif event == "push":
        found = ref_entity(payload, to_string(payload.get("ref")))
    elif event in ("create", "delete"):
        ref = to_string(payload.get("ref"))
        prefix = REF_PREFIXES.get(to_string(payload.get("ref_type")), "")
        found = ref_entity(payload, ref and prefix + ref)
    elif event in REPOSITORY_NUMBERED_ALERTS:
        found = repository_scoped(payload, to_string(value_at(payload, ("alert", "number"))))
    elif event == "workflow_dispatch":
        found = repository_scoped(payload, to_string(payload.get("workflow")))
    return found or fallback_entity_id(event, payload)


def ref_entity(payload: dict[str, Any], ref: str) -> str:
    return repository_scoped(payload, ref) if ref.startswith("refs/") else ref


def repository_scoped(payload: dict[str, Any], name: str) -> str:
    """``<owner>/<repo>/<name>``; just ``name`` when the payload names no repository."""
    if not name:
        return ""
    repository = to_string(value_at(payload, ("repository", "full_name")))
    return f"{repository}/{name}" if repository else name


def value_at(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = payload
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def fallback_entity_id(event: str, payload: dict[str, Any]) -> str:
    found = extract_entity_id(payload)
    if found != "unknown":
        return found
    for key in (event, event.removesuffix("s"), "pull_request"):
        found = extract_entity_id(payload.get(key))
        if found != "unknown":
            return found
    return "unknown"


PROVIDER = Provider("github", webhook=GitHubProvider())
