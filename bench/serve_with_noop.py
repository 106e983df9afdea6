"""Bench-only launcher: the real service plus ``POST /noop`` in one process.

``/noop`` reads the request body and answers 202 with an empty body; it measures the HTTP
floor of this very process (uvicorn + httptools + uvloop, the same settings), the ceiling the
webhook route is compared with. Everything else goes to ``TapApp.asgi`` unchanged.

Rather than a copy of ``ensemble_tap.app.serve`` that could drift from it, this runs the
product's own ``ensemble-tap serve`` command (config loading, logging, uvloop runner,
``TapApp`` start/stop, ``TapServer``) and changes exactly one thing:
``ensemble_tap.app.uvicorn_config`` is wrapped so the ASGI callable it configures is
``with_noop(TapApp.asgi)``; every uvicorn option stays the product's.

    .venv/bin/python bench/serve_with_noop.py --config FILE
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

import ensemble_tap.app as tap_app
from ensemble_tap.asgi_types import ASGIApp, Receive, Scope, Send
from ensemble_tap.cli import cli

NOOP_PATH = "/noop"


def with_noop(app: ASGIApp) -> ASGIApp:
    """``app`` with ``POST /noop`` answered 202 (empty body) before any routing."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == NOOP_PATH and scope["method"] == "POST":
            more_body = True
            while more_body:  # drain the body, as any real handler must
                message = await receive()
                more_body = message.get("more_body", False)
            await send(
                {
                    "type": "http.response.start",
                    "status": 202,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return dispatch


def install_noop_route() -> None:
    """Make ``ensemble_tap.app.serve`` serve ``with_noop(app.asgi)``."""
    product_uvicorn_config = tap_app.uvicorn_config  # fails loudly if the product renames it

    def uvicorn_config_with_noop(app: tap_app.TapApp, **overrides: Any) -> uvicorn.Config:
        config = product_uvicorn_config(app, **overrides)
        asgi: ASGIApp = app.asgi
        if config.app != asgi:
            raise RuntimeError("uvicorn_config no longer serves TapApp.asgi: update this file")
        config.app = with_noop(app.asgi)
        return config

    tap_app.uvicorn_config = uvicorn_config_with_noop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config file")
    args = parser.parse_args()
    install_noop_route()
    cli(["serve", "--config", args.config], prog_name="ensemble-tap")


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__":
    # A worker process of server.workers: multiprocessing re-imports this script under
    # this name before running the worker, so its uvicorn_config gets the route too.
    install_noop_route()
