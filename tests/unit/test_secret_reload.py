"""What a secrets reload takes from the config it loaded, and what it leaves for a restart."""

from __future__ import annotations

from typing import Any

from ensemble_tap.config.models import Config
from ensemble_tap.secret_reload import restart_only_changes, with_new_secrets


def config(**providers: Any) -> Config:
    return Config.model_validate(
        {"server": {"admin_token": "a" * 24, "port": 8080}, "providers": providers}
    )


def test_secrets_are_taken_and_everything_else_is_kept() -> None:
    running = config(
        acme={"secret": "old", "tenants": {"t1": {"secret": "t-old", "tenant_id": "one"}}}
    )
    loaded = Config.model_validate(
        {
            "server": {"admin_token": "b" * 24, "port": 9090},
            "providers": {
                "acme": {
                    "secret": ["new", "old"],
                    "signature_versions": [],
                    "tenants": {"t1": {"secret": "t-new", "tenant_id": "renamed"}},
                },
                "added": {"secret": "x"},
            },
        }
    )
    updated = with_new_secrets(running, loaded)
    assert updated.server.admin_token == "b" * 24
    assert updated.server.port == 8080  # not a secret: waits for a restart
    acme = updated.providers["acme"]
    assert acme.secret == ["new", "old"]
    assert acme.tenants["t1"].secret == ["t-new"]
    assert acme.tenants["t1"].tenant_id == "one"
    assert set(updated.providers) == {"acme"}  # a provider added needs a restart
    assert restart_only_changes(running, loaded) == [
        "providers.acme.signature_versions",
        "providers.acme.tenants.t1.tenant_id",
        "providers.added",
        "server.port",
    ]


def test_nothing_but_secrets_changed_needs_no_restart() -> None:
    running = config(acme={"secret": "old"})
    loaded = config(acme={"secret": "new"})
    assert restart_only_changes(running, loaded) == []
