"""Provider modules: each holds all knowledge of one SaaS provider.

To add a webhook provider, add a module with a class implementing ``WebhookProvider`` and one
line in ``_DEDICATED`` below. Any other configured name uses the generic HMAC verifier.
"""

from __future__ import annotations

from ensemble_tap.providers.base import (
    BadPayload,
    Extraction,
    SecretNotConfigured,
    VerificationFailed,
    WebhookError,
    WebhookProvider,
    WebhookRequest,
)
from ensemble_tap.providers.generic import GenericProvider
from ensemble_tap.providers.github import GitHubProvider
from ensemble_tap.providers.hubspot import HubSpotProvider
from ensemble_tap.providers.linear import LinearProvider
from ensemble_tap.providers.shopify import ShopifyProvider
from ensemble_tap.providers.stripe import StripeProvider

_DEDICATED: dict[str, WebhookProvider] = {
    "stripe": StripeProvider(),
    "github": GitHubProvider(),
    "hubspot": HubSpotProvider(),
    "linear": LinearProvider(),
    "shopify": ShopifyProvider(),
}
_GENERIC = GenericProvider()


def webhook_provider(name: str) -> WebhookProvider:
    """The verifier/extractor for a configured provider name."""
    return _DEDICATED.get(name, _GENERIC)


__all__ = [
    "BadPayload",
    "Extraction",
    "SecretNotConfigured",
    "VerificationFailed",
    "WebhookError",
    "WebhookProvider",
    "WebhookRequest",
    "webhook_provider",
]
