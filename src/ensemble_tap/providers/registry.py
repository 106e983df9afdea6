"""The provider registry: the one list of providers, by name.

Routing (``webhook``), polling (``poller``) and config validation (it satisfies
``config.provider_rules.ProviderRules``) all read it. A name it does not hold still receives
webhooks, through the generic HMAC verifier.
"""

from __future__ import annotations

from ensemble_tap.providers.base import WebhookProvider
from ensemble_tap.providers.contract import Provider, ProviderPoller
from ensemble_tap.providers.generic import GenericProvider

_GENERIC = GenericProvider()


class ProviderRegistry:
    def __init__(self, *providers: Provider) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider) -> None:
        if provider.name in self._providers:
            raise ValueError(f"provider {provider.name} is registered twice")
        self._providers[provider.name] = provider

    def unregister(self, name: str) -> None:
        del self._providers[name]

    def names(self) -> list[str]:
        return list(self._providers)

    def webhook(self, name: str) -> WebhookProvider:
        """The verifier/extractor for a configured provider name."""
        provider = self._providers.get(name)
        if provider is None or provider.webhook is None:
            return _GENERIC
        return provider.webhook

    def has_dedicated_webhook(self, name: str) -> bool:
        provider = self._providers.get(name)
        return provider is not None and provider.webhook is not None

    def poller(self, name: str) -> ProviderPoller | None:
        """The poller of a provider name, or None when it cannot be polled."""
        provider = self._providers.get(name)
        return None if provider is None else provider.poller
