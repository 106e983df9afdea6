"""The shared HMAC verifier (docs/compatibility.md, "Signature verification"): decoding,
comparison, rotation and timestamp windows."""

from __future__ import annotations

import _hashlib
import base64
import hashlib
import hmac

import pytest

from ensemble_tap.events import parse_rfc3339_ns
from ensemble_tap.providers import hmac_verifier
from ensemble_tap.providers.base import VerificationFailed
from ensemble_tap.providers.hmac_verifier import (
    check_timestamp,
    check_window,
    decode_signature,
    matches,
    verify,
)
from tests.unit.webhooks import NS, hmac_b64, hmac_hex

# The reference's published test vectors: "Verifier, prefixed hex" and "Verifier, base64".
PREFIXED_HEX_SECRET = "test-secret"
PREFIXED_HEX_BODY = b'{"ok":true}'
PREFIXED_HEX_HEADER = "sha256=97b4f11584439784b801821ece72af4e29c19573aacf94bcc0533c09086b3643"
BASE64_SECRET = "test-secret"
BASE64_BODY = b"payload"
BASE64_SIGNATURE = "L80NvETV3Qc+rV6ktNgc/VQ+XeQunDU/gEUnFeK1dqM="

NOW_NS = parse_rfc3339_ns("2026-03-03T14:22:00Z") or 0


class TestSpecVectors:
    def test_prefixed_hex_vector_verifies(self) -> None:
        verify(
            [PREFIXED_HEX_SECRET],
            PREFIXED_HEX_BODY,
            header_value=PREFIXED_HEX_HEADER,
            header_name="X-Signature",
            encoding="hex",
            prefix="sha256=",
        )

    def test_base64_vector_verifies(self) -> None:
        verify(
            [BASE64_SECRET],
            BASE64_BODY,
            header_value=BASE64_SIGNATURE,
            header_name="X-Sig",
            encoding="base64",
        )

    def test_base64_vector_with_a_current_rfc3339_timestamp_verifies(self) -> None:
        """The Go verifier test: base64 signature plus an RFC3339 timestamp of "now"."""
        check_timestamp(
            "2026-03-03T14:22:00Z", header_name="X-Timestamp", max_age=300, now_ns=NOW_NS
        )
        verify(
            [BASE64_SECRET],
            BASE64_BODY,
            header_value=BASE64_SIGNATURE,
            header_name="X-Sig",
            encoding="base64",
        )

    def test_rfc3339_timestamp_twenty_minutes_old_is_outside_a_five_minute_window(self) -> None:
        with pytest.raises(VerificationFailed, match="outside max age window"):
            check_timestamp(
                "2026-03-03T14:02:00Z", header_name="X-Timestamp", max_age=300, now_ns=NOW_NS
            )


class TestVerify:
    def test_a_wrong_secret_is_a_signature_mismatch(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(
                ["other"],
                PREFIXED_HEX_BODY,
                header_value=PREFIXED_HEX_HEADER,
                header_name="X-Signature",
                encoding="hex",
                prefix="sha256=",
            )

    def test_a_tampered_body_is_a_signature_mismatch(self) -> None:
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(
                [PREFIXED_HEX_SECRET],
                b'{"ok":false}',
                header_value=PREFIXED_HEX_HEADER,
                header_name="X-Signature",
                encoding="hex",
                prefix="sha256=",
            )

    def test_the_second_secret_of_a_rotation_list_verifies(self) -> None:
        verify(
            ["retired-secret", PREFIXED_HEX_SECRET],
            PREFIXED_HEX_BODY,
            header_value=PREFIXED_HEX_HEADER,
            header_name="X-Signature",
            encoding="hex",
            prefix="sha256=",
        )

    def test_the_first_secret_of_a_rotation_list_verifies(self) -> None:
        verify(
            [PREFIXED_HEX_SECRET, "next-secret"],
            PREFIXED_HEX_BODY,
            header_value=PREFIXED_HEX_HEADER,
            header_name="X-Signature",
            encoding="hex",
            prefix="sha256=",
        )

    @pytest.mark.parametrize("header", ["", "   ", "\t"])
    def test_a_missing_or_blank_signature_names_the_header(self, header: str) -> None:
        with pytest.raises(VerificationFailed, match='missing signature header "X-Signature"'):
            verify(["s"], b"body", header_value=header, header_name="X-Signature", encoding="hex")

    def test_a_truncated_signature_is_a_mismatch_not_a_crash(self) -> None:
        """A length difference is a plain mismatch (constant-time compare of unequal lengths)."""
        with pytest.raises(VerificationFailed, match="signature mismatch"):
            verify(
                [PREFIXED_HEX_SECRET],
                PREFIXED_HEX_BODY,
                header_value=PREFIXED_HEX_HEADER[:-2],
                header_name="X-Signature",
                encoding="hex",
                prefix="sha256=",
            )

    def test_hmac_sha1_is_available_when_asked_for(self) -> None:
        signature = hmac_hex("s", b"body", "sha1")
        verify(
            ["s"],
            b"body",
            header_value=signature,
            header_name="X",
            encoding="hex",
            algorithm="sha1",
        )
        with pytest.raises(VerificationFailed):
            verify(["s"], b"body", header_value=signature, header_name="X", encoding="hex")

    def test_an_empty_secret_list_never_matches(self) -> None:
        assert not matches([], b"body", signature=bytes.fromhex(hmac_hex("s", b"body")))

    def test_matches_uses_the_secret_utf8_bytes_as_the_key(self) -> None:
        secret = "clé-secrète"
        mac = hmac.new(secret.encode("utf-8"), b"x", hashlib.sha256).digest()
        assert matches([secret], b"x", signature=mac)


class TestDecodeSignature:
    def test_hex_accepts_lower_and_upper_case(self) -> None:
        assert decode_signature("0aFF", "hex") == b"\x0a\xff"

    def test_the_prefix_is_removed(self) -> None:
        assert decode_signature("sha256=00ff", "hex", "sha256=") == b"\x00\xff"

    def test_the_prefix_is_optional(self) -> None:
        assert decode_signature("00ff", "hex", "sha256=") == b"\x00\xff"

    def test_the_prefix_is_case_sensitive(self) -> None:
        with pytest.raises(VerificationFailed, match="decode signature"):
            decode_signature("SHA256=00ff", "hex", "sha256=")

    def test_surrounding_whitespace_is_trimmed(self) -> None:
        assert decode_signature("  00ff\n", "hex") == b"\x00\xff"

    @pytest.mark.parametrize(
        "value",
        ["0", "abc", "00 ff", "zz", "0x00", "", "00ff=", "０１"],
        ids=["one-digit", "odd", "inner-space", "non-hex", "0x", "empty", "trailing", "fullwidth"],
    )
    def test_malformed_hex_is_rejected(self, value: str) -> None:
        with pytest.raises(VerificationFailed, match="decode signature"):
            decode_signature(value, "hex")

    def test_standard_base64_with_padding_decodes(self) -> None:
        assert decode_signature(base64.b64encode(b"\xfb\xff").decode(), "base64") == b"\xfb\xff"

    def test_base64_line_breaks_are_skipped(self) -> None:
        """Go's decoder silently skips CR and LF."""
        assert decode_signature("+/\r\n8=", "base64") == b"\xfb\xff"

    @pytest.mark.parametrize(
        "value",
        ["-_8=", "+/8", "+/8=!", "é===", "+/ 8="],
        ids=["url-safe-alphabet", "missing-padding", "junk", "non-ascii", "inner-space"],
    )
    def test_malformed_base64_is_rejected(self, value: str) -> None:
        with pytest.raises(VerificationFailed, match="decode signature"):
            decode_signature(value, "base64")

    def test_a_hex_signature_is_not_valid_base64_here(self) -> None:
        """Shopify's header must be base64: the hex form of the same MAC is refused."""
        with pytest.raises(VerificationFailed):
            verify(
                ["s"], b"x", header_value=hmac_hex("s", b"x"), header_name="X", encoding="base64"
            )
        verify(["s"], b"x", header_value=hmac_b64("s", b"x"), header_name="X", encoding="base64")


class TestTimestampWindow:
    def test_milliseconds_with_13_digits(self) -> None:
        assert (
            check_timestamp("1772547720000", header_name="H", max_age=300, now_ns=NOW_NS) == NOW_NS
        )

    def test_seconds_with_10_digits(self) -> None:
        assert check_timestamp("1772547720", header_name="H", max_age=300, now_ns=NOW_NS) == NOW_NS

    def test_rfc3339_with_nanoseconds_and_offset(self) -> None:
        parsed = check_timestamp(
            "2026-03-03T15:22:00.5+01:00", header_name="H", max_age=300, now_ns=NOW_NS
        )
        assert parsed == NOW_NS + NS // 2

    def test_exactly_the_max_age_in_the_past_is_allowed(self) -> None:
        check_window(NOW_NS - 300 * NS, 300, NOW_NS)

    def test_exactly_the_max_age_in_the_future_is_allowed(self) -> None:
        check_window(NOW_NS + 300 * NS, 300, NOW_NS)

    def test_one_nanosecond_beyond_the_max_age_in_the_past_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="outside max age window"):
            check_window(NOW_NS - 300 * NS - 1, 300, NOW_NS)

    def test_one_nanosecond_beyond_the_max_age_in_the_future_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="outside max age window"):
            check_window(NOW_NS + 300 * NS + 1, 300, NOW_NS)

    def test_a_timestamp_twenty_minutes_in_the_future_is_rejected(self) -> None:
        with pytest.raises(VerificationFailed, match="outside max age window"):
            check_timestamp("2026-03-03T14:42:00Z", header_name="H", max_age=300, now_ns=NOW_NS)

    @pytest.mark.parametrize("value", ["", "  "])
    def test_an_empty_timestamp_names_the_header(self, value: str) -> None:
        with pytest.raises(
            VerificationFailed, match='invalid timestamp header "X-Ts": empty timestamp'
        ):
            check_timestamp(value, header_name="X-Ts", max_age=300, now_ns=NOW_NS)

    @pytest.mark.parametrize(
        "value",
        [
            "yesterday",
            "2026-03-03",
            "2026-03-03 14:22:00Z",
            "2026-03-03T14:22:00",
            "+1772547720",
            "1772547720.5",
            "-1772547720",
            "1" * 20,
            "１７７２５４７７２０",
        ],
        ids=[
            "words",
            "date-only",
            "space",
            "no-offset",
            "signed",
            "fraction",
            "negative",
            "20-digits",
            "fullwidth-digits",
        ],
    )
    def test_unsupported_formats_are_rejected(self, value: str) -> None:
        with pytest.raises(VerificationFailed, match="unsupported timestamp format"):
            check_timestamp(value, header_name="X-Ts", max_age=300, now_ns=NOW_NS)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("openssl", [True, False], ids=["openssl-hmac", "hmac-module"])
def test_both_hmac_paths_agree_with_the_standard_library(
    algorithm: str, openssl: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenSSL's HMAC object where the interpreter has it, the hmac module where not."""
    if not openssl:
        monkeypatch.setattr(hmac_verifier, "_openssl_hmac", None)
    hmac_verifier._keyed.cache_clear()
    try:
        body = b'{"id":"deal_1"}'
        right = hmac.digest(b"k", body, algorithm)
        assert matches(["other", "k"], body, signature=right, algorithm=algorithm)
        assert not matches(["other"], body, signature=right, algorithm=algorithm)
        assert matches(["k"], body, signature=right, algorithm=algorithm)  # a cached copy
        keyed = type(hmac_verifier._keyed("k", algorithm))
        assert keyed is (_hashlib.HMAC if openssl else hmac.HMAC)
    finally:
        hmac_verifier._keyed.cache_clear()
