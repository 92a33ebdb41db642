"""The index behind the server: ``POST /v1/search`` and ``GET /v1/index/stats``.

Both read the store in a worker thread (a search embeds the query; counting reads the store),
so the event loop never waits on the index.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ragkit.server.dependencies import AppState, Caller
from ragkit.server.schemas import (
    ERRORS,
    IndexStatsResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
)

router = APIRouter()


@router.get(
    "/v1/index/stats", response_model=IndexStatsResponse, responses=ERRORS, tags=["service"]
)
async def index_stats(state: AppState, caller: Caller) -> IndexStatsResponse:
    return IndexStatsResponse(stats=await run_in_threadpool(state.service.index_stats))


@router.post("/v1/search", response_model=SearchResponse, responses=ERRORS, tags=["rag"])
async def search(body: SearchRequest, state: AppState, caller: Caller) -> SearchResponse:
    query = state.check_question(body.query)
    k = state.check_k(body.k)
    assert k is not None
    hits = await asyncio.to_thread(state.service.search, query, k)
    return SearchResponse(
        query=query,
        hits=[
            SearchHit(
                rank=h.rank,
                score=h.score,
                chunk_id=h.chunk.id,
                source=h.chunk.source,
                start=h.chunk.start,
                end=h.chunk.end,
                text=h.chunk.text,
                metadata=h.chunk.metadata,
            )
            for h in hits
        ],
    )
