"""GitHub webhooks (docs/compatibility.md: the reference's behaviour and this project's fixes).

Fixed behaviours: SHA-256 only unless ``signature_versions`` enables sha1/sha512; a missing
``X-GitHub-Event`` or an unusable Content-Type is a bad payload (400), not an auth failure; the
entity id is the id of the object each event is about (GitHub's documented payloads in
tests/fixtures/github); a push is about its ref; the dedup key and CloudEvent id include the hook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from ensemble_tap.envelopes import envelope_for
from ensemble_tap.providers import webhook_provider
from ensemble_tap.providers.base import (
    BadPayload,
    Extraction,
    SecretNotConfigured,
    VerificationFailed,
)
from ensemble_tap.providers.github import GitHubProvider
from tests.unit.webhooks import hmac_hex, make_request, settings, sha256_hex

PROVIDER = GitHubProvider()

# The reference's published test vectors: "GitHub sha256" and "GitHub sha1 (fallback header)".
SECRET = "github-secret"
BODY = b'{"action":"closed","pull_request":{"id":99}}'
SHA256_HEADER = "sha256=cfb6a949717cd058094da572cf28a68131252bf11660aaf67984fc42fb09a3a2"
SHA1_HEADER = "sha1=68531ffd08b3d8052aff55bd3c18720fb9dd63e0"

JSON = {"Content-Type": "application/json", "X-GitHub-Event": "pull_request"}


def verify(headers: dict[str, str], body: bytes = BODY, **config: object) -> None:
    PROVIDER.verify(make_request(body, headers), settings(secret=SECRET, **config), "github")


def extract_one(
    body: bytes, event: str, content_type: str = "application/json", **headers: str
) -> Extraction:
    request = make_request(body, {"Content-Type": content_type, "X-GitHub-Event": event, **headers})
    [found] = PROVIDER.extract(request)
    return found


class TestVerify:
    def test_the_sha256_vector_verifies(self) -> None:
        verify({"X-Hub-Signature-256": SHA256_HEADER, **JSON})

    def test_the_sha1_fallback_header_is_refused_by_default(self) -> None:
        with pytest.raises(VerificationFailed, match="missing signature"):
            verify({"X-Hub-Signature": SHA1_HEADER, **JSON})

    def test_the_sha1_vector_verifies_when_sha1_is_enabled(self) -> None:
        verify({"X-Hub-Signature": SHA1_HEADER}, signature_versions=["sha256", "sha1"])

    def test_a_sha1_value_inside_the_256_header_is_refused_by_default(self) -> None:
        with pytest.raises(VerificationFailed, match="sha1 signatures are not enabled"):
            verify({"X-Hub-Signature-256": SHA1_HEADER})

    def test_a_sha1_value_inside_the_256_header_verifies_when_enabled(self) -> None:
        verify({"X-Hub-Signature-256": SHA1_HEADER}, signature_versions="sha256,sha1")

    def test_the_256_header_wins_over_the_sha1_header(self) -> None:
        verify(
            {"X-Hub-Signature-256": SHA256_HEADER, "X-Hub-Signature": "sha1=00"},
            signature_versions=["sha256", "sha1"],
        )
        with pytest.raises(VerificationFailed):
            verify(
                {"X-Hub-Signature-256": "sha256=00", "X-Hub-Signature": SHA1_HEADER},
                signature_versions=["sha256", "sha1"],
            )

    def test_sha512_verifies_only_when_enabled(self) -> None:
        header = {"X-Hub-Signature-256": "sha512=" + hmac_hex(SECRET, BODY, "sha512")}
        with pytest.raises(VerificationFailed, match="sha512 signatures are not enabled"):
            verify(header)
        verify(header, signature_versions=["sha256", "sha512"])

    def test_enabling_only_sha1_disables_sha256(self) -> None:
        with pytest.raises(VerificationFailed, match="sha256 signatures are not enabled"):
            verify({"X-Hub-Signature-256": SHA256_HEADER}, signature_versions=["sha1"])

    @pytest.mark.parametrize("prefix", ["md5", "SHA256", "sha384", ""])
    def test_an_unknown_hash_prefix_is_rejected(self, prefix: str) -> None:
        value = SHA256_HEADER.replace("sha256", prefix, 1)
        with pytest.raises(VerificationFailed, match="unknown hash type prefix"):
            verify({"X-Hub-Signature-256": value})

    def test_a_signature_without_an_equals_sign_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="error parsing signature"):
            verify({"X-Hub-Signature-256": SHA256_HEADER.replace("=", "")})

    @pytest.mark.parametrize("value", ["sha256=xyz", "sha256=", "sha256=abc"])
    def test_bad_hex_is_rejected(self, value: str) -> None:
        with pytest.raises(VerificationFailed, match="decode signature"):
            verify({"X-Hub-Signature-256": value})

    def test_a_missing_signature_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="missing signature"):
            verify(JSON)

    def test_a_wrong_secret_is_rejected(self) -> None:
        value = "sha256=" + hmac_hex("other", BODY)
        with pytest.raises(VerificationFailed, match="payload signature check failed"):
            verify({"X-Hub-Signature-256": value})

    def test_the_second_configured_secret_verifies(self) -> None:
        request = make_request(BODY, {"X-Hub-Signature-256": SHA256_HEADER})
        PROVIDER.verify(request, settings(secret=["retired", SECRET]), "github")

    def test_a_form_post_is_verified_over_the_raw_body(self) -> None:
        form = b"payload=" + quote(BODY.decode()).encode()
        headers = {
            "X-Hub-Signature-256": "sha256=" + hmac_hex(SECRET, form),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        verify(headers, body=form)
        with pytest.raises(VerificationFailed):
            verify({**headers, "X-Hub-Signature-256": SHA256_HEADER}, body=form)

    def test_verification_does_not_need_the_event_header(self) -> None:
        """The event header is a payload concern, checked by extract (400)."""
        verify({"X-Hub-Signature-256": SHA256_HEADER})

    def test_no_secret_is_a_configuration_error(self) -> None:
        request = make_request(BODY, {"X-Hub-Signature-256": SHA256_HEADER})
        with pytest.raises(SecretNotConfigured):
            PROVIDER.verify(request, settings(), "github")


class TestExtract:
    def test_a_pull_request_event(self) -> None:
        found = extract_one(BODY, "pull_request", **{"X-GitHub-Delivery": "delivery-1"})
        assert (found.entity_type, found.action, found.entity_id) == (
            "pull_request",
            "closed",
            "99",
        )
        assert found.provider_event_id == "delivery-1"
        assert found.dedup_key == "delivery-1"
        assert found.snapshot == {"action": "closed", "pull_request": {"id": 99}}
        assert found.provider_time_ns is None
        assert found.payload_digest == sha256_hex(BODY)

    def test_a_push_without_a_repository_is_identified_by_its_ref(self) -> None:
        body = b'{"ref":"refs/heads/main","after":"9f2c1e0","action":"ignored"}'
        found = extract_one(body, "push")
        assert (found.entity_type, found.action, found.entity_id) == (
            "push",
            "updated",
            "refs/heads/main",
        )

    def test_an_issues_event_finds_the_issue_id(self) -> None:
        found = extract_one(b'{"action":"opened","issue":{"id":7}}', "issues")
        assert (found.entity_type, found.action, found.entity_id) == ("issues", "opened", "7")

    def test_an_event_named_like_its_object_finds_the_object_id(self) -> None:
        found = extract_one(b'{"action":"created","release":{"id":5}}', "release")
        assert found.entity_id == "5"

    def test_a_ping_is_updated_and_about_its_hook(self) -> None:
        found = extract_one(b'{"zen":"Keep it logically awesome.","hook_id":1}', "ping")
        assert (found.entity_type, found.action, found.entity_id) == ("ping", "updated", "1")

    def test_the_event_and_action_are_lower_cased(self) -> None:
        found = extract_one(b'{"action":" Closed "}', "Pull_Request")
        assert (found.entity_type, found.action) == ("pull_request", "closed")

    @pytest.mark.parametrize("action", ["", "  ", 5, None, {"x": 1}])
    def test_a_blank_or_non_string_action_is_updated(self, action: object) -> None:
        found = extract_one(json.dumps({"action": action}).encode(), "issues")
        assert found.action == "updated"

    def test_the_events_own_object_wins_over_a_top_level_id(self) -> None:
        found = extract_one(b'{"id":1,"pull_request":{"id":2}}', "pull_request")
        assert found.entity_id == "2"

    def test_an_event_outside_the_table_falls_back_to_a_top_level_id(self) -> None:
        found = extract_one(b'{"id":1,"widget":{"id":2}}', "widget")
        assert found.entity_id == "1"

    def test_a_push_without_a_ref_is_unknown(self) -> None:
        assert extract_one(b'{"ref":"  ","after":"9f2c1e0"}', "push").entity_id == "unknown"

    def test_a_long_numeric_id_is_exact(self) -> None:
        found = extract_one(b'{"issue":{"id":820982911946154508}}', "issues")
        assert found.entity_id == "820982911946154508"

    def test_a_missing_delivery_header_leaves_dedup_to_the_digest(self) -> None:
        found = extract_one(BODY, "pull_request")
        assert found.dedup_key == ""

    @pytest.mark.parametrize(
        "content_type",
        ["application/json; charset=utf-8", "Application/JSON", " application/json ;x=y"],
    )
    def test_json_content_types_with_parameters_and_any_case(self, content_type: str) -> None:
        assert extract_one(BODY, "pull_request", content_type).entity_id == "99"

    def test_a_form_post_is_normalized_from_its_payload_field(self) -> None:
        form = b"other=1&payload=" + quote(BODY.decode()).encode()
        found = extract_one(form, "pull_request", "application/x-www-form-urlencoded")
        assert (found.entity_id, found.action) == ("99", "closed")
        assert found.snapshot == {"action": "closed", "pull_request": {"id": 99}}
        assert found.payload_digest == sha256_hex(form)

    def test_spec_negative_missing_x_github_event_is_a_bad_payload(self) -> None:
        request = make_request(BODY, {"Content-Type": "application/json"})
        with pytest.raises(BadPayload, match="missing X-GitHub-Event header") as info:
            PROVIDER.extract(request)
        assert info.value.status == 400

    def test_a_blank_event_header_is_missing(self) -> None:
        with pytest.raises(BadPayload, match="X-GitHub-Event"):
            extract_one(BODY, "   ")

    @pytest.mark.parametrize("content_type", ["", "  ", ";charset=utf-8"])
    def test_a_missing_content_type_is_a_bad_payload(self, content_type: str) -> None:
        with pytest.raises(BadPayload, match="missing Content-Type"):
            extract_one(BODY, "pull_request", content_type)

    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/xml", "multipart/form-data"]
    )
    def test_an_unsupported_content_type_is_a_bad_payload(self, content_type: str) -> None:
        with pytest.raises(BadPayload, match="unsupported Content-Type"):
            extract_one(BODY, "pull_request", content_type)

    @pytest.mark.parametrize(
        "form",
        [b"payload=%7B%7D;x=1", b"payload=%ZZ", b"payload=\xff", b"payload", b"a=1", b""],
        ids=["semicolon", "bad-escape", "bad-utf8", "no-equals", "no-payload", "empty"],
    )
    def test_an_unusable_form_body_is_a_bad_payload(self, form: bytes) -> None:
        with pytest.raises(BadPayload):
            extract_one(form, "push", "application/x-www-form-urlencoded")

    @pytest.mark.parametrize("body", [b"[]", b'"x"', b"not json", b""])
    def test_a_payload_that_is_not_a_json_object_is_a_bad_payload(self, body: bytes) -> None:
        with pytest.raises(BadPayload):
            extract_one(body, "push")


# --- GitHub's documented payloads (tests/fixtures/github, sources in its README.md) ----------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
REPOSITORY = "Codertocat/Hello-World"

# fixture (= X-GitHub-Event) → (entity_id, action) of the object each event is about.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "push": (f"{REPOSITORY}/refs/tags/simple-tag", "deleted"),  # the docs' push deletes a tag
    "pull_request": ("279147437", "opened"),
    "pull_request_review": ("237895671", "submitted"),  # the review, not pull request 279147437
    "pull_request_review_comment": ("284312630", "created"),
    "issues": ("444500041", "opened"),
    "issue_comment": ("492700400", "created"),  # the comment, not issue 444500041
    "release": ("17372790", "published"),
    "installation": ("957387", "created"),
    "ping": ("109948940", "updated"),  # the hook
    "check_run": ("128620228", "created"),
    "label": ("1362937026", "created"),
    "milestone": ("4317517", "closed"),
    "status": ("6805126730", "updated"),
    "create": (f"{REPOSITORY}/refs/tags/simple-tag", "created"),  # the ref, as for pushes
    "commit_comment": ("2", "created"),  # the comment
    "code_scanning_alert": ("Codertocat/Hello-World/10", "reopened"),  # numbered per repository
    "pull_request_review_thread": (
        "PRRT_kwDOEL39TM4w7XDQ",
        "resolved",
    ),  # the thread, not pull request 873298238
    "secret_scanning_alert_location": (
        "Codertocat/Hello-World/191",
        "created",
    ),  # the alert the location was found for
    "discussion": ("3297442", "created"),
    "projects_v2_item": ("15", "created"),
    "branch_protection_rule": ("21796960", "edited"),  # the rule
    "deployment_status": ("209916254", "created"),  # the status, not deployment 145988746
    "repository": ("186853261", "created"),
    "check_suite": ("118578174", "requested"),
    "deployment": ("145988746", "created"),
    "member": ("583231", "edited"),  # the collaborator
    "workflow_job": ("2832853555", "queued"),
    "security_and_analysis": ("1", "updated"),  # the repository; no action
    "discussion_comment": ("544078", "created"),  # the comment, not discussion 3297442
    "repository_dispatch": (
        "17273051",
        "on-demand-test",
    ),  # the action is the dispatch's event_type
    "marketplace_purchase": ("18404719", "purchased"),  # the purchasing account
    "workflow_dispatch": (
        "octo-org/octo-repo/.github/workflows/hello-world-workflow.yml",
        "updated",
    ),  # no action
    "installation_repositories": ("957387", "added"),  # the installation
    "repository_vulnerability_alert": ("91095730", "create"),
    "secret_scanning_alert": ("Codertocat/Hello-World/191", "reopened"),  # numbered per repository
    "team": ("3253328", "created"),
    "membership": ("21031067", "added"),  # the member
    "meta": ("101047067", "deleted"),  # the hook
    "dependabot_alert": ("octocat/hello-world/1", "fixed"),  # numbered per repository
    "star": ("186853002", "deleted"),  # the repository
    "org_block": ("39652351", "unblocked"),  # the blocked user
    "sponsorship": ("MDExOlNwb25zb3JzaGlwMQ==", "created"),  # no numeric id
    "merge_group": (
        "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d",
        "checks_requested",
    ),  # no id: the head SHA
}


def documented(event: str) -> bytes:
    return (FIXTURES / f"{event}.json").read_bytes()


def documented_json(event: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(documented(event))
    return value


class TestDocumentedPayloads:
    @pytest.mark.parametrize(("event", "expected"), DOCUMENTED.items(), ids=list(DOCUMENTED))
    def test_each_event_is_about_its_own_object(
        self, event: str, expected: tuple[str, str]
    ) -> None:
        found = extract_one(documented(event), event, **{"X-GitHub-Delivery": "d-1"})
        assert (found.entity_type, found.entity_id, found.action) == (event, *expected)
        assert found.snapshot == documented_json(event)

    def test_every_fixture_is_in_the_table_and_named_in_the_readme(self) -> None:
        files = {path.stem for path in FIXTURES.glob("*.json")}
        assert files == set(DOCUMENTED)
        readme = (FIXTURES / "README.md").read_text()
        for name in files:
            assert f"`{name}.json`" in readme


class TestPushes:
    """GitHub's push payload says what happened to the ref: ``created``, ``deleted``,
    ``forced``; the entity is the ref (``<owner>/<repo>/<ref>``), never a zero SHA."""

    def test_a_tag_deletion_is_deleted_on_the_ref_not_the_zero_sha(self) -> None:
        found = extract_one(documented("push"), "push")
        assert found.action == "deleted"
        assert found.entity_id == f"{REPOSITORY}/refs/tags/simple-tag"
        assert "0000000000" not in found.entity_id

    def test_a_new_branch_is_created(self) -> None:
        payload = documented_json("push") | {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "created": True,
            "deleted": False,
        }
        found = extract_one(json.dumps(payload).encode(), "push")
        assert (found.action, found.entity_id) == ("created", f"{REPOSITORY}/refs/heads/main")

    @pytest.mark.parametrize("forced", [False, True])
    def test_new_commits_on_a_branch_are_updated(self, forced: bool) -> None:
        payload = documented_json("push") | {
            "ref": "refs/heads/main",
            "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "created": False,
            "deleted": False,
            "forced": forced,
        }
        found = extract_one(json.dumps(payload).encode(), "push")
        assert (found.action, found.entity_id) == ("updated", f"{REPOSITORY}/refs/heads/main")

    @pytest.mark.parametrize(
        ("event", "ref_type", "prefix"),
        [
            ("create", "branch", "refs/heads/"),
            ("delete", "tag", "refs/tags/"),
        ],
    )
    def test_create_and_delete_name_the_same_ref_entity_as_push(
        self, event: str, ref_type: str, prefix: str
    ) -> None:
        body = json.dumps(
            {"ref": "simple-tag", "ref_type": ref_type, "repository": {"full_name": REPOSITORY}}
        ).encode()
        found = extract_one(body, event)
        assert found.entity_id == f"{REPOSITORY}/{prefix}simple-tag"
        assert found.action == f"{event}d"  # created / deleted, as for pushes

    def test_a_numbered_alert_is_scoped_by_its_repository(self) -> None:
        body = json.dumps(
            {"action": "fixed", "alert": {"number": 2}, "repository": {"full_name": REPOSITORY}}
        ).encode()
        assert extract_one(body, "dependabot_alert").entity_id == f"{REPOSITORY}/2"


class TestOneDeliveryThroughSeveralHooks:
    """GitHub sends an event with one ``X-GitHub-Delivery`` GUID to every hook subscribed to
    it (a repository hook and a GitHub App, their payloads differing in ``installation``);
    GitHub's redelivery of a delivery keeps its GUID and hook."""

    GUID = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

    def through(self, hook: str = "", **headers: str) -> Extraction:
        if hook:
            headers["X-GitHub-Hook-ID"] = hook
        return extract_one(
            documented("issues"), "issues", **{"X-GitHub-Delivery": self.GUID}, **headers
        )

    def test_two_hooks_are_two_events_and_a_redelivery_is_one(self) -> None:
        first, second, again = self.through("111"), self.through("222"), self.through("111")
        assert first.dedup_key == f"{self.GUID}:111"
        assert second.dedup_key == f"{self.GUID}:222"
        assert again.dedup_key == first.dedup_key
        assert [f.provider_event_id for f in (first, second)] == [self.GUID, self.GUID]

    def test_the_cloudevent_ids_differ_and_keep_the_guid_as_provider_event_id(self) -> None:
        envelopes = [
            envelope_for(self.through(hook), "github", "", "req-1", 1, "ensemble.tap", False)
            for hook in ("111", "222", "111")
        ]
        (one, one_id), (two, two_id), (again, again_id) = envelopes
        assert one.event_id != two.event_id
        assert one_id != two_id
        assert (again.event_id, again_id) == (one.event_id, one_id)
        assert one_id == f"github::{self.GUID}:111"
        for envelope, _ in envelopes:
            assert orjson.loads(envelope.body)["data"]["provider_event_id"] == self.GUID

    def test_without_a_hook_id_the_installation_target_tells_the_copies_apart(self) -> None:
        target = {"X-GitHub-Hook-Installation-Target-Type": "integration"}
        app = self.through(**target, **{"X-GitHub-Hook-Installation-Target-ID": "29310"})
        repo = self.through(
            **{
                "X-GitHub-Hook-Installation-Target-Type": "repository",
                "X-GitHub-Hook-Installation-Target-ID": "186853002",
            }
        )
        assert app.dedup_key == f"{self.GUID}:integration:29310"
        assert repo.dedup_key == f"{self.GUID}:repository:186853002"

    def test_the_guid_alone_when_no_hook_is_named(self) -> None:
        found = self.through()
        assert (found.dedup_key, found.event_id) == (self.GUID, self.GUID)


def test_github_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("github"), GitHubProvider)
