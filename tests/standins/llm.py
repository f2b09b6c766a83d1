"""An OpenAI-compatible chat-completions endpoint (``POST /v1/chat/completions``), as Carebase's
LLM adapter speaks to it: bearer key, ``model`` and ``messages`` in, ``choices[0].message.content``
out, OpenAI's error shape (``{"error": {"message", "type", "code"}}``) on a bad key.

The replies are scripted by the test (``script``): each request takes the next one. Everything
received is kept, so a test can check what left Carebase (no identifiers).
"""

from __future__ import annotations

import secrets
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.standins.base import Handler, Received, StandIn


class LlmStandIn(StandIn):
    def __init__(self) -> None:
        self.api_key = "sk-" + secrets.token_hex(16)
        self.model = "standin-chat-1"
        self.script: list[str] = []
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/chat/completions", self.completions)]

    async def completions(self, request: Request, received: Received) -> Response:
        if received.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}}, status_code=401)
        body = received.json()
        if body.get("model") != self.model or not isinstance(body.get("messages"), list):
            return JSONResponse({"error": {"message": "The model does not exist.", "type": "invalid_request_error",
                                           "code": "model_not_found"}}, status_code=404)
        content = self.script.pop(0) if self.script else "Could you tell me more?"
        return JSONResponse({
            "id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})
