"""GET /api/v1/events/stream: Server-Sent Events for the channels a client may read."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from carebase.platform import realtime
from carebase.platform.web import CurrentPrincipal, request_scope

router = APIRouter(prefix="/api/v1", tags=["realtime"])


@router.get(
    "/events/stream",
    summary="Live updates as Server-Sent Events",
    description="Subscribe with one or more `channel` parameters: `account:<your account id>` or "
                "`tenant:<your tenant id>:<topic>`. Every channel is authorized (403 if you may not "
                "read it). Messages are JSON `{channel, data}` with ids only; fetch details through "
                "the API. A comment ping every 15 s keeps proxies from closing the stream. Clients "
                "that cannot keep a stream open should poll every 30 s instead.",
    response_class=EventSourceResponse,
)
async def stream(request: Request, principal: CurrentPrincipal,
                 channel: Annotated[list[str], Query(min_length=1, max_length=20)]) -> EventSourceResponse:
    channels = [realtime.authorize(principal, ch) for ch in channel]
    await request_scope(request).release()  # do not hold a database connection for the stream's life
    hub: realtime.Hub = request.app.state.hub

    async def events():
        async with hub.subscribe(channels) as queue:
            yield ServerSentEvent(event="ready", data=json.dumps({"channels": channels}))
            while True:
                msg = await queue.get()
                yield ServerSentEvent(event="message", data=json.dumps(msg, separators=(",", ":")))

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
