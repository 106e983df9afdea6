"""Provider modules: each holds all knowledge of one SaaS provider.

To add a provider, add a module that ends with ``PROVIDER = Provider(name, webhook=…,
poller=…)`` and one line in ``REGISTRY`` below (docs/architecture.md, "Adding a provider").
Any other configured name receives webhooks through the generic HMAC verifier. Validation
messages that name the providers supporting a key (``signature_versions``, ``fields``) list
them in registry order.
"""

from __future__ import annotations

from ensemble_tap.providers import (
    github,
    hubspot,
    linear,
    notion,
    quickbooks,
    salesforce,
    shopify,
    stripe,
)
from ensemble_tap.providers.base import (
    BadPayload,
    Extraction,
    SecretNotConfigured,
    VerificationFailed,
    WebhookError,
    WebhookProvider,
    WebhookRequest,
)
from ensemble_tap.providers.contract import Provider
from ensemble_tap.providers.registry import ProviderRegistry

REGISTRY = ProviderRegistry(
    hubspot.PROVIDER,
    salesforce.PROVIDER,
    quickbooks.PROVIDER,
    notion.PROVIDER,
    stripe.PROVIDER,
    github.PROVIDER,
    linear.PROVIDER,
    shopify.PROVIDER,
)
webhook_provider = REGISTRY.webhook
poll_provider = REGISTRY.poller

__all__ = [
    "REGISTRY",
    "BadPayload",
    "Extraction",
    "Provider",
    "ProviderRegistry",
    "SecretNotConfigured",
    "VerificationFailed",
    "WebhookError",
    "WebhookProvider",
    "WebhookRequest",
    "poll_provider",
    "webhook_provider",
]
