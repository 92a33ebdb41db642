"""The HTTP routes, one :class:`fastapi.APIRouter` per area.

| module | routes |
| --- | --- |
| ``admin`` | ``POST /v1/admin/reload`` |
| ``status`` | ``GET /v1/health``, ``GET /v1/models``, ``GET /v1/models/{id}`` |
| ``index`` | ``GET /v1/index/stats``, ``POST /v1/search`` |
| ``answers`` | ``POST /v1/query``, ``POST /v1/chat/completions`` (both may stream) |
| ``feedback`` | ``POST /v1/feedback`` |
| ``page`` | ``GET /`` (the chat page; only with ``serve_page``) |

Routes share the app's :class:`~ragkit.server.state.ServerState` through the dependencies of
:mod:`ragkit.server.dependencies`, never through closures.
"""

from __future__ import annotations

from fastapi import APIRouter

from ragkit.server.routes import admin, answers, feedback, index, page, status

API_ROUTERS: tuple[APIRouter, ...] = (
    admin.router,
    status.router,
    index.router,
    answers.router,
    feedback.router,
)
"""The API's routers, in the order their routes are registered."""
PAGE_ROUTER = page.router

__all__ = ["API_ROUTERS", "PAGE_ROUTER"]
