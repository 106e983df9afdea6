"""The guard chain of every admin route, as one FastAPI dependency: ``guarded(action, scope)``.

In the reference's order: request id → CIDR allowlist → client certificate → rate limits (per
IP, then per presented token) → token scope. The first guard that refuses ends the call
(``AdminFailure``); a call that passes all of them is handed to the route as a ``Call``.

A route declares its scope once, in its ``guarded(...)`` parameter; the OpenAPI document reads
it from there (``route_scope``).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the annotations of
# ``Guarded.__call__`` from an instance, which has no module globals to resolve names in.

import ipaddress
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from ensemble_tap.admin.calls import AdminFailure, Call
from ensemble_tap.admin.guards import (
    ClientAddress,
    Scope,
    TokenAuthenticator,
    TokenBucketLimiter,
    fingerprint,
    in_networks,
    retry_after_seconds,
)
from ensemble_tap.config.models import ServerConfig
from ensemble_tap.observability import Metrics
from ensemble_tap.request_ids import resolve_request_id


class GuardChain:
    """The guards of one admin app, with their state (the rate-limit buckets)."""

    def __init__(self, server: ServerConfig, metrics: Metrics) -> None:
        self.server = server
        self.metrics = metrics
        self.authenticator = TokenAuthenticator(server)
        self.limiter = TokenBucketLimiter(
            server.admin_rate_limit_per_sec, server.admin_rate_limit_burst
        )
        self.addresses = ClientAddress(server.trusted_proxies)
        self.allowed = [
            ipaddress.ip_network(cidr, strict=False) for cidr in server.admin_allowed_cidrs if cidr
        ]

    def open_call(self, request: Request, endpoint: str) -> Call:
        """The call of ``request``, before any guard ran (``unknown`` when no route matched)."""
        headers = _header_map(request)
        return Call(
            request=request,
            metrics=self.metrics,
            request_id=resolve_request_id(headers, "admin"),
            endpoint=endpoint,
            requester_ip=self.addresses.requester_ip(_peer(request), headers),
        )

    def check(self, request: Request, endpoint: str, scope: Scope) -> Call:
        """The call, once every guard let it through; else the first guard's AdminFailure."""
        server = self.server
        call = self.open_call(request, endpoint)
        request.state.call = call  # for the failure handlers: the audit line names the call
        headers = _header_map(request)
        if self.allowed and not in_networks(call.requester_ip, self.allowed):
            failure = AdminFailure(403, "forbidden", "admin request forbidden")
            failure.fields["reason"] = "cidr_allowlist_miss"
            raise failure
        if server.admin_mtls_required:
            cert = headers.get(server.admin_mtls_client_cert_header.lower(), "").strip()
            if not cert or not self.addresses.is_trusted(_peer(request)):
                failure = AdminFailure(
                    403, "mTLS client certificate required", "admin request forbidden"
                )
                failure.fields["reason"] = "mtls_required"
                raise failure
        token = headers.get("x-admin-token", "").strip()
        for limit_scope, key in (
            ("ip", f"{endpoint}|ip|{call.requester_ip or 'unknown'}"),
            ("token", f"{endpoint}|token|{fingerprint(token)}" if token else ""),
        ):
            if not key:
                continue
            wait = self.limiter.take(key)
            if wait:
                seconds = retry_after_seconds(wait)
                failure = AdminFailure(
                    429,
                    "rate limit exceeded",
                    "admin request rate limited",
                    headers={"Retry-After": str(seconds)},
                )
                failure.fields |= {"limit_scope": limit_scope, "retry_after_seconds": seconds}
                raise failure
        call.principal = self.authenticator.authenticate(token, scope)
        if call.principal is None:
            raise AdminFailure(401, "unauthorized", "admin request unauthorized")
        return call


def _header_map(request: Request) -> dict[str, str]:
    """Lower-case names to values; of a repeated header, the last one counts."""
    return {k.lower(): v for k, v in request.headers.items()}


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


def guard_chain(request: Request) -> GuardChain:
    chain: GuardChain = request.app.state.guards
    return chain


@dataclass(slots=True, frozen=True)
class Guarded:
    """The dependency: ``action`` names the call in metrics and the audit log; ``scope`` is
    what the token must grant."""

    action: str
    scope: Scope

    # async: FastAPI runs a plain function in a thread pool, and the limiter is not
    # thread-safe (nor does the chain block).
    async def __call__(self, request: Request) -> Call:
        return guard_chain(request).check(request, self.action, self.scope)


def guarded(action: str, scope: Scope) -> Any:
    """``call: Annotated[Call, guarded("replay_dlq", Scope.REPLAY)]`` in a route's signature."""
    return Depends(Guarded(action, scope))


def route_scope(route: APIRoute) -> Scope | None:
    """The scope a route's ``guarded(...)`` parameter declares (None: the route has none)."""
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, Guarded):
            return dependency.call.scope
    return None
