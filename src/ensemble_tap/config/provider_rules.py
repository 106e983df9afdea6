"""What config validation needs to know about providers, given to it by the caller.

``config/`` sits below the provider modules and imports none of them. Whoever loads a config
passes the provider registry (``ensemble_tap.providers.REGISTRY``), which satisfies
``ProviderRules``: it says which names have a dedicated webhook verifier or a poller, and each
of those declares its own facts (secret keys, signature versions, poll limits) and checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ensemble_tap.config.models import ProviderConfig


@dataclass(slots=True, frozen=True)
class SignatureVersions:
    """What a provider's ``signature_versions`` may list, and what it accepts when unset."""

    allowed: frozenset[str]
    default: tuple[str, ...]


class WebhookRules(Protocol):
    """The facts webhook settings are checked against."""

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """Keys holding a signing secret: webhook mode needs one of them."""
        ...

    @property
    def signature_versions(self) -> SignatureVersions | None:
        """None: the provider has no ``signature_versions`` key."""
        ...


class PollRules(Protocol):
    """The facts a poll target is checked against (``poll_rules.py``)."""

    @property
    def token_key(self) -> str:
        """The key holding the bearer token when ``access_token`` is blank."""
        ...

    @property
    def max_page_size(self) -> int:
        """The largest ``query_per_page`` the provider's API accepts."""
        ...

    @property
    def required_keys(self) -> tuple[str, ...]:
        """Keys every poll target needs besides ``base_url`` and a token."""
        ...

    @property
    def object_name(self) -> re.Pattern[str] | None:
        """What an ``objects`` entry must match (names end up in queries and URL paths);
        None: any."""
        ...

    @property
    def reads_fields(self) -> bool:
        """Whether ``fields`` selects what is read (else the key has no effect)."""
        ...

    def target_problems(self, settings: ProviderConfig) -> Iterator[str]:
        """The provider's own checks of one poll target (settings after tenant merging)."""
        ...

    def settings_warnings(self, settings: ProviderConfig) -> Iterator[tuple[str, str]]:
        """The provider's own warnings about its base settings, as (key, message)."""
        ...


class ProviderRules(Protocol):
    def names(self) -> Sequence[str]:
        """Every registered provider, in registry order (messages list them in it)."""
        ...

    def webhook(self, name: str) -> WebhookRules:
        """The webhook verifier of ``name``: its own, else the generic one."""
        ...

    def has_dedicated_webhook(self, name: str) -> bool: ...

    def poller(self, name: str) -> PollRules | None: ...


def listing(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, (", ".join(names[:-1]), *names[-1:])))
