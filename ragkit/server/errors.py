"""One JSON error shape for every failure, so clients handle errors in one place.

The body is ``{"error": {"message", "type", "code"}}`` — the shape the OpenAI clients already
parse — for our own 4xx, for request validation (422), for unknown routes and for internal
errors, whose details are logged server-side but never sent to the client.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragkit.errors import InvalidQueryError, RagkitError
from ragkit.feedback import FeedbackError
from ragkit.generation.generator import ContextLengthError
from ragkit.terminal import protect_logger

# Log lines may quote request data, documents or model output: shown with control and bidi
# characters as symbols (ragkit.terminal.SafeLogFilter); every server module logs here.
log = protect_logger("ragkit.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
}


class ApiError(Exception):
    """An error with its HTTP status, a machine-readable code and optional headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def error_body(
    status: int, message: str, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": _TYPES.get(status, "error"), "code": code}}


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def as_api_error(exc: Exception) -> ApiError:
    """Map library errors to HTTP: user input → 400, anything else → 500 (details hidden)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextLengthError | InvalidQueryError | FeedbackError):
        return ApiError(400, str(exc), type(exc).__name__)
    if isinstance(exc, RagkitError):
        return ApiError(400, str(exc), "ragkit_error")
    log.exception("internal error while serving a request", exc_info=exc)
    return ApiError(500, "internal server error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        err = as_api_error(exc)
        return error_response(err.status, err.message, err.code, err.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
        return error_response(422, "; ".join(problems) or "invalid request", "validation_error")

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), None, dict(exc.headers or {}))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RagkitError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_api_error)
