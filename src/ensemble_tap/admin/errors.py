"""How the admin app answers what no handler answered: an ``AdminFailure`` (a guard or a
handler refused), a path or method no route serves, a request FastAPI could not validate.
Each is audited like every admin call and answered ``{"request_id": …, "error": …}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ensemble_tap.admin.calls import AdminFailure, Call
from ensemble_tap.admin.guarded import guard_chain
from ensemble_tap.admin.routes import router


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AdminFailure, on_failure)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


async def on_failure(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdminFailure)
    call: Call | None = getattr(request.state, "call", None)
    if call is None:  # failed before the guards ran (e.g. request validation)
        call = guard_chain(request).open_call(request, "unknown")
    return call.fail(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # No route matched (unknown path or wrong method): audited like every admin call.
    call = guard_chain(request).open_call(request, "unknown")
    error = "method not allowed" if exc.status_code == 405 else "not found"
    response = call.fail(
        AdminFailure(
            exc.status_code, error, f"admin request {error}", headers=dict(exc.headers or {})
        )
    )
    if exc.status_code == 405:
        # Starlette names only the first route of the path; a path can have several.
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


async def on_validation_error(request: Request, exc: Exception) -> Response:
    failure = AdminFailure(400, "invalid request", "admin request rejected")
    return await on_failure(request, failure)


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in router.routes:  # the admin app's only routes
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)
