"""The FastAPI application: ``create_app`` assembles state, middleware and the routers.

Routes validate and bound the request, then hand the work to the library — answers through the
:class:`~ragkit.server.batching.DynamicBatcher` (batched ``ask_batch`` in a worker thread),
streams, searches and index counts in threads — so the event loop only ever waits, never
computes. The routes live in :mod:`ragkit.server.routes`, one router per area; what they share
is the app's :class:`~ragkit.server.state.ServerState` (``app.state.ragkit``), reached through
:mod:`ragkit.server.dependencies`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ragkit.feedback import FeedbackStore
from ragkit.rag import RAGPipeline
from ragkit.server.errors import install_error_handlers
from ragkit.server.middleware import BodySizeLimit
from ragkit.server.routes import API_ROUTERS, PAGE_ROUTER
from ragkit.server.service import RAGService
from ragkit.server.settings import ServerSettings
from ragkit.server.state import ServerState


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the batcher with the app; stop it (and close a store the app opened) at the end."""
    state: ServerState = app.state.ragkit
    await state.start()
    try:
        yield
    finally:
        await state.stop()


def create_app(
    rag: RAGPipeline | RAGService,
    settings: ServerSettings | None = None,
    store: FeedbackStore | None = None,
) -> FastAPI:
    """Build the app around a pipeline. ``store`` (or ``settings.feedback_db``) enables feedback."""
    settings = settings or ServerSettings()
    service = rag if isinstance(rag, RAGService) else RAGService(rag)
    own_store = store is None and settings.feedback_db is not None
    if own_store:
        assert settings.feedback_db is not None
        store = FeedbackStore(settings.feedback_db)
    app = FastAPI(
        title="ragkit",
        version="1",
        summary="Retrieval-augmented question answering with citations; OpenAI-compatible chat.",
        lifespan=lifespan,
    )
    app.state.ragkit = ServerState(service, settings, store, own_store=own_store)
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for router in API_ROUTERS:
        app.include_router(router)
    if settings.serve_page:
        app.include_router(PAGE_ROUTER)
    return app
