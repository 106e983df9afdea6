"""Provider modules: each holds all knowledge of one SaaS provider.

To add a webhook provider, add a module with a class implementing ``WebhookProvider`` and one
line in ``_DEDICATED`` below. Any other configured name uses the generic HMAC verifier. A
provider that can be polled also has a ``ProviderPoller`` in its module and a line in
``_POLLERS``.
"""

from __future__ import annotations

from ensemble_tap.poller.model import ProviderPoller
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
from ensemble_tap.providers.hubspot import HubSpotPoller, HubSpotProvider
from ensemble_tap.providers.linear import LinearProvider
from ensemble_tap.providers.notion import NotionPoller
from ensemble_tap.providers.quickbooks import QuickBooksPoller
from ensemble_tap.providers.salesforce import SalesforcePoller
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
_POLLERS: dict[str, ProviderPoller] = {
    "hubspot": HubSpotPoller(),
    "salesforce": SalesforcePoller(),
    "quickbooks": QuickBooksPoller(),
    "notion": NotionPoller(),
}


def webhook_provider(name: str) -> WebhookProvider:
    """The verifier/extractor for a configured provider name."""
    return _DEDICATED.get(name, _GENERIC)


def poll_provider(name: str) -> ProviderPoller | None:
    """The poller of a provider name, or None when it cannot be polled."""
    return _POLLERS.get(name)


__all__ = [
    "BadPayload",
    "Extraction",
    "SecretNotConfigured",
    "VerificationFailed",
    "WebhookError",
    "WebhookProvider",
    "WebhookRequest",
    "poll_provider",
    "webhook_provider",
]
