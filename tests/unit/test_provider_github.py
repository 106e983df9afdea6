"""GitHub webhooks (spec §2.4, §3.3, with the §9 fixes).

Fixed behaviours: SHA-256 only unless ``signature_versions`` enables sha1/sha512; a missing
``X-GitHub-Event`` or an unusable Content-Type is a bad payload (400), not an auth failure; the
entity id is also looked up under the event's own object (``issues`` → ``issue.id``).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

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

# §2.10 "GitHub sha256" and "GitHub sha1 (fallback header)".
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

    def test_a_push_is_created_and_identified_by_its_head_commit(self) -> None:
        body = b'{"ref":"refs/heads/main","after":"9f2c1e0","action":"ignored"}'
        found = extract_one(body, "push")
        assert (found.entity_type, found.action, found.entity_id) == ("push", "created", "9f2c1e0")

    def test_an_issues_event_finds_the_issue_id(self) -> None:
        found = extract_one(b'{"action":"opened","issue":{"id":7}}', "issues")
        assert (found.entity_type, found.action, found.entity_id) == ("issues", "opened", "7")

    def test_an_event_named_like_its_object_finds_the_object_id(self) -> None:
        found = extract_one(b'{"action":"created","release":{"id":5}}', "release")
        assert found.entity_id == "5"

    def test_a_ping_is_updated(self) -> None:
        found = extract_one(b'{"zen":"Keep it logically awesome.","hook_id":1}', "ping")
        assert (found.entity_type, found.action, found.entity_id) == ("ping", "updated", "unknown")

    def test_the_event_and_action_are_lower_cased(self) -> None:
        found = extract_one(b'{"action":" Closed "}', "Pull_Request")
        assert (found.entity_type, found.action) == ("pull_request", "closed")

    @pytest.mark.parametrize("action", ["", "  ", 5, None, {"x": 1}])
    def test_a_blank_or_non_string_action_is_updated(self, action: object) -> None:
        found = extract_one(json.dumps({"action": action}).encode(), "issues")
        assert found.action == "updated"

    def test_a_top_level_id_wins(self) -> None:
        found = extract_one(b'{"id":1,"pull_request":{"id":2}}', "pull_request")
        assert found.entity_id == "1"

    def test_a_blank_head_commit_is_unknown(self) -> None:
        assert extract_one(b'{"after":"  "}', "push").entity_id == "unknown"

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


def test_github_has_its_dedicated_provider() -> None:
    assert isinstance(webhook_provider("github"), GitHubProvider)
