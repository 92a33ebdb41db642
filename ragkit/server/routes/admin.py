"""``POST /v1/admin/reload``: load the generator again and swap it in (API keys required)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from ragkit.errors import RagkitError
from ragkit.server.dependencies import AdminCaller, AppState
from ragkit.server.errors import ApiError, log
from ragkit.server.schemas import ERRORS, ErrorResponse, ReloadResponse

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    responses={**ERRORS, 403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    tags=["admin"],
)
async def reload(state: AppState, caller: AdminCaller) -> ReloadResponse:
    """Load the generator again (e.g. a newly promoted adapter) and swap it in.

    The old generator keeps answering while the new one loads; requests already running
    at the swap finish on it. A failed load keeps the old generator and says why.
    """
    service = state.service
    began = time.perf_counter()
    async with state.reloading:
        try:
            await asyncio.to_thread(service.reload)
        except RagkitError as exc:
            raise ApiError(
                409, f"reload failed; still serving the previous model: {exc}", "reload_failed"
            ) from None
    log.info("reloaded the generator (reload %d) for %s", service.reloads, caller)
    return ReloadResponse(
        model=service.model_name(),
        adapter=service.adapter_name() or None,
        prompt_format=service.prompt_format(),
        reloads=service.reloads,
        seconds=round(time.perf_counter() - began, 3),
    )
