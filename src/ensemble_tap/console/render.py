"""HTML from the package's Jinja templates, escaped by default, with the console's filters:
``when`` (a time in the reader's zone, UTC on hover), ``json`` (indented), ``ago``."""

from __future__ import annotations

from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, Undefined, select_autoescape
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse

from ensemble_tap.console.security import SECURITY_HEADERS

NAVIGATION = (
    ("overview", "/console", "Overview"),
    ("dlq", "/console/dlq", "Dead letters"),
    ("jobs", "/console/jobs", "Replay jobs"),
    ("pollers", "/console/pollers", "Pollers"),
    ("events", "/console/events", "Events"),
    ("tail", "/console/tail", "Live tail"),
)


def when(value: Any) -> Markup:
    """``<time>`` with the RFC 3339 instant: the script shows it in the browser's zone and
    keeps UTC in the title; without script the UTC text stays."""
    text = str(value or "").strip()
    if not text:
        return Markup("—")
    return Markup('<time datetime="{0}" title="{0} (UTC)">{1}</time>').format(
        text, text.replace("T", " ").replace("Z", " UTC")
    )


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def seconds(value: Any) -> str:
    """A duration in seconds as an operator reads it (``42 s``, ``3 min``, ``2.5 h``,
    ``276 d``)."""
    if isinstance(value, Undefined) or value is None or value == "":  # not known (yet)
        return "—"
    amount = float(value)
    if amount < 120:
        return f"{amount:.0f} s"
    if amount < 7200:
        return f"{amount / 60:.0f} min"
    if amount < 172800:
        return f"{amount / 3600:.1f} h"
    return f"{amount / 86400:.0f} d"


class Renderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("ensemble_tap.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = when
        self.env.filters["json"] = pretty_json
        self.env.filters["seconds"] = seconds
        self.env.globals["navigation"] = NAVIGATION
        self.env.globals["escape"] = escape

    def page(self, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("session", None)
        context.setdefault("section", "")
        context.setdefault("refresh", 0)
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)
