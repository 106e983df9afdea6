"""Ensemble Tap: verified SaaS webhooks as CloudEvents on NATS JetStream."""

__version__ = "0.1.0"
