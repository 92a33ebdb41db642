"""The route dependencies: the app's shared state, and who may call (keys, rate limits).

Routes declare what they need with the annotated aliases: ``state: AppState`` for the
:class:`~ragkit.server.state.ServerState`, ``caller: Caller`` for an authenticated,
rate-limited caller and ``caller: AdminCaller`` for the admin routes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragkit.server.auth import bearer_token, caller_id, key_matches
from ragkit.server.errors import ApiError
from ragkit.server.limits import rate_limit_bucket, retry_after_header
from ragkit.server.state import ServerState


def app_state(request: Request) -> ServerState:
    """The state ``create_app`` keeps as ``app.state.ragkit``."""
    state: ServerState = request.app.state.ragkit
    return state


AppState = Annotated[ServerState, Depends(app_state)]


async def guard(request: Request, state: AppState) -> str:
    """Authenticate (when keys are configured) and rate-limit the caller."""
    settings = state.settings
    token = bearer_token(request.headers.get("authorization"))
    if settings.auth_required:
        if token is None or not key_matches(token, settings.api_keys):
            raise ApiError(
                401,
                "missing or invalid API key (send Authorization: Bearer <key>)",
                "invalid_api_key",
                {"WWW-Authenticate": "Bearer"},
            )
    else:
        token = None
    client = request.client.host if request.client else None
    caller = caller_id(token, client)
    bucket = rate_limit_bucket(token, client, settings.rate_limit_loopback)
    if state.limiter is not None and bucket is not None:
        wait = state.limiter.acquire(bucket)
        if wait > 0:
            raise ApiError(
                429,
                f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
                "rate_limited",
                {"Retry-After": retry_after_header(wait)},
            )
    return caller


async def admin(request: Request, state: AppState) -> str:
    """Admin routes need API keys configured (else 403: no one may use them) and a valid key."""
    if not state.settings.auth_required:
        raise ApiError(
            403,
            "admin routes are disabled: the server has no API keys "
            "(start it with --api-key-file or RAGKIT_API_KEY)",
            "admin_disabled",
        )
    return await guard(request, state)


Caller = Annotated[str, Depends(guard)]
AdminCaller = Annotated[str, Depends(admin)]
