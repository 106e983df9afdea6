"""The one error ``ensemble-tap send`` reports: a one-line message, exit status 1."""

from __future__ import annotations


class SendError(Exception):
    """Something the user can act on: a bad file or URL, an unreachable service, an event
    that did not arrive. ``str()`` is the whole message, one line."""
