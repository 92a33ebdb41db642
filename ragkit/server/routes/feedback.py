"""``POST /v1/feedback``: votes on served answers and choices between two of them."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from ragkit.server.dependencies import AppState, Caller
from ragkit.server.errors import ApiError
from ragkit.server.schemas import ERRORS, FeedbackRequest, FeedbackResponse

router = APIRouter()


@router.post("/v1/feedback", response_model=FeedbackResponse, responses=ERRORS, tags=["feedback"])
async def feedback(body: FeedbackRequest, state: AppState, caller: Caller) -> FeedbackResponse:
    store = state.store
    if store is None:
        raise ApiError(404, "this server does not record feedback", "feedback_disabled")
    if body.vote is not None and body.answer_id is not None:
        await asyncio.to_thread(store.vote, body.answer_id, 1 if body.vote == "up" else -1)
        return FeedbackResponse(recorded="vote")
    assert body.chosen_id is not None and body.rejected_id is not None
    await asyncio.to_thread(store.choose, body.chosen_id, body.rejected_id)
    return FeedbackResponse(recorded="choice")
