"""``ensemble-tap send``: a test delivery signed exactly as its provider signs.

``bodies`` builds the body (a documented sample with fresh ids, or a file), ``signing`` the
provider's headers and signature, ``delivery`` the URL and the POST, ``waiting`` the
``--wait`` read-back (stream or event store), ``command`` ties them together.
"""

from __future__ import annotations

from ensemble_tap.send.command import SendOptions, send
from ensemble_tap.send.errors import SendError

__all__ = ["SendError", "SendOptions", "send"]
