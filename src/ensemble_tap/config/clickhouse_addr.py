"""``clickhouse.addr`` entries as (host, port): read by validation and by the sink's backend
(which must not import the validator above it)."""

from __future__ import annotations


def clickhouse_endpoints(addr: str, secure: bool) -> list[tuple[str, int]]:
    """``host[:port]`` entries of ``clickhouse.addr`` (validated) as (host, port) pairs."""
    default = 8443 if secure else 8123
    endpoints = []
    for entry in addr.split(","):
        host, port, _ = split_host_port(entry.strip())
        endpoints.append((host, port or default))
    return endpoints


def split_host_port(entry: str) -> tuple[str, int | None, str]:
    """(host, port or None, problem); ``[v6]`` and ``[v6]:port`` are accepted."""
    if "://" in entry or "/" in entry:
        return "", None, "must be host:port (no scheme or path; clickhouse.secure selects https)"
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            return "", None, "must be host:port (IPv6 addresses in brackets)"
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = entry.partition(":")
        if ":" in port_text_:
            return "", None, "must be host:port (IPv6 addresses in brackets)"
        port_text = port_text_ if colon else None
        if not host:
            return "", None, "must be host:port"
    if port_text is None:
        return host, None, ""
    if not port_text.isdigit():
        return host, None, f'has invalid port: port "{port_text}" must be numeric'
    port = int(port_text)
    if not 1 <= port <= 65535:
        return host, None, f"has invalid port: port {port} must be in range 1..65535"
    return host, port, ""
