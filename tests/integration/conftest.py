from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ensemble_tap.app import ALL_ROLES
from tests.support.app import RunningApp
from tests.support.configs import make_config
from tests.support.nats_server import NatsServer

StartApp = Callable[..., RunningApp]


@pytest.fixture
def start_app(private_nats: NatsServer, tmp_path: Path) -> Iterator[StartApp]:
    """Start the service against this test's own nats-server; stopped after the test."""
    apps: list[RunningApp] = []

    def start(roles: frozenset[str] | None = None, **sections: Any) -> RunningApp:
        config = make_config(private_nats.url, str(tmp_path / "data"), **sections)
        app = RunningApp(config, roles or ALL_ROLES).start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()
