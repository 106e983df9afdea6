"""Configuration: models of the YAML surface, loading and validation."""

from ensemble_tap.config.durations import format_duration, parse_duration
from ensemble_tap.config.loader import ConfigError, LoadedConfig, load_config
from ensemble_tap.config.models import Config, NatsConfig, ProviderConfig, ServerConfig
from ensemble_tap.config.tenants import InvalidTenant, TenantNotFound, resolve_tenant

__all__ = [
    "Config",
    "ConfigError",
    "InvalidTenant",
    "LoadedConfig",
    "NatsConfig",
    "ProviderConfig",
    "ServerConfig",
    "TenantNotFound",
    "format_duration",
    "load_config",
    "parse_duration",
    "resolve_tenant",
]
