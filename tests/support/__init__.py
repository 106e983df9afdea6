"""Test helpers: a real nats-server, a running app over HTTP, signing helpers."""
