"""What the server is and runs: ``GET /v1/health`` and the OpenAI-compatible ``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter

from ragkit.server.dependencies import AppState, Caller
from ragkit.server.errors import ApiError
from ragkit.server.schemas import ERRORS, ErrorResponse, HealthResponse, ModelCard, ModelList
from ragkit.server.state import ServerState

router = APIRouter()


@router.get("/v1/health", response_model=HealthResponse, tags=["service"])
async def health(state: AppState) -> HealthResponse:
    stats = state.batcher.stats
    return HealthResponse(
        model=state.settings.model_id,
        model_loaded=state.service.rag.generator.is_loaded,
        queue_waiting=state.batcher.waiting,
        batches=stats.batches,
        batched_requests=stats.items,
        largest_batch=stats.largest,
        auth_required=state.settings.auth_required,
        feedback=state.store is not None,
    )


def model_card(state: ServerState) -> ModelCard:
    return ModelCard(id=state.settings.model_id, created=state.started)


@router.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["openai"])
async def list_models(state: AppState, caller: Caller) -> ModelList:
    """OpenAI-compatible list of models: the one model this server answers with."""
    return ModelList(data=[model_card(state)])


@router.get(
    "/v1/models/{model:path}",
    response_model=ModelCard,
    responses={**ERRORS, 404: {"model": ErrorResponse}},
    tags=["openai"],
)
async def retrieve_model(model: str, state: AppState, caller: Caller) -> ModelCard:
    if model != state.settings.model_id:
        raise ApiError(404, f"model {model!r} does not exist", "model_not_found")
    return model_card(state)
