"""Ports for test servers that keep their port over a restart.

A port from the kernel's ephemeral range (``bind(0)``, ``free_port``) can be taken, between a
server's stop and its restart, by any outgoing connection of the test run — and with three
pytest-xdist processes there are many — so the restart fails with "address already in use".
``stable_port`` picks a free port *below* that range, where only explicit binds go.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def stable_port() -> int:
    """A free loopback port below the kernel's ephemeral range."""
    low = _ephemeral_range()[0]
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)  # nosec B311: not a secret
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")
