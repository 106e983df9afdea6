"""What keeps a browser session safe: its cookie, CSRF tokens, the origin of a POST, and the
headers every console answer carries.

A POST is accepted only when (1) the browser says it comes from this site (``Sec-Fetch-Site``
and ``Origin``, when sent) and (2) its form carries the session's CSRF token (the sign-in
form: the value of a short-lived cookie, double-submit). The session cookie is HttpOnly and
SameSite=Strict, Secure when the console is served over TLS.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "tap_console"
SIGN_IN_COOKIE = "tap_console_signin"
COOKIE_PATH = "/console"
SIGN_IN_COOKIE_TTL = 15 * 60
# No script or style from anywhere but the console itself; no framing; forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class TrustedProxies:
    """Whether a peer is one of ``server.trusted_proxies`` (whose X-Forwarded-Proto counts)."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]

    def trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.strip().strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def served_over_tls(request: Request, proxies: TrustedProxies) -> bool:
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and proxies.trusts(peer)


def set_cookie(response: Response, *, name: str, value: str, max_age: int, secure: bool) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)


def tokens_match(presented: str, expected: str) -> bool:
    """Constant time; an empty token never matches."""
    return bool(presented and expected) and hmac.compare_digest(
        presented.encode(), expected.encode()
    )


def cross_site(request: Request, proxies: TrustedProxies) -> str:
    """Why a POST is refused as coming from another site ("" when it is this site's own):
    what the browser says in ``Sec-Fetch-Site`` and ``Origin`` (either may be absent). Behind
    a trusted proxy the public host may be in ``X-Forwarded-Host``."""
    site = request.headers.get("sec-fetch-site", "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    if origin is None:
        return ""
    hosts = {request.headers.get("host", "").strip().lower()}
    peer = request.client.host if request.client else ""
    if proxies.trusts(peer):
        hosts.add(request.headers.get("x-forwarded-host", "").split(",")[0].strip().lower())
    hosts.discard("")
    if origin.strip().lower() == "null" or urlsplit(origin.strip()).netloc.lower() not in hosts:
        return f"Origin: {origin.strip()[:200]}"
    return ""
