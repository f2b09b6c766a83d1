"""The intake assistant on any OpenAI-compatible chat-completions endpoint (``POST
{CAREBASE_LLM_BASE_URL}/chat/completions``, bearer ``CAREBASE_LLM_API_KEY``, ``CAREBASE_LLM_MODEL``).

It receives what the offline engine receives: de-identified messages and a context without
identity. It is told to ask one question at a time and, when it has enough, to answer with one
JSON object carrying the summary. A model that breaks the format gets its text shown as a
question; one that never finishes is cut off by the service after the last exchange.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carebase.consult.engine import MAX_EXCHANGES, MIN_EXCHANGES, Context, Reply, Turn
from carebase.platform.errors import DomainError
from carebase.settings import Settings

SYSTEM_PROMPT = f"""You are the intake assistant of a clinic. A physician reviews everything you write; you never
diagnose with certainty and never prescribe. Ask the patient one short follow-up question at a time about their
complaint: onset, duration, severity, associated symptoms, what they have taken, relevant history, vitals if
they have them. Ask between {MIN_EXCHANGES - 1} and {MAX_EXCHANGES - 1} questions in all. Identifiers in the
messages were replaced with tokens such as [NAME_1] or [DATE_2]; keep tokens exactly as they are and never ask
for names, phone numbers, addresses or ids. When you have enough, answer with only this JSON object:
{{"done": true, "message": "<a short closing line to the patient>", "summary": {{"complaint": str,
"symptoms": [str], "onset": str, "duration": str, "severity": int (0-10) or null, "associated": str,
"taken_so_far": str, "vitals": {{}}, "history": [str], "allergies": [str], "current_medicines": [str],
"possible_conditions": [{{"name": str, "code": "ICD-10 code"}}]}}}}"""


class _Condition(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=300)
    code: str | None = Field(default=None, max_length=20)


class _Summary(BaseModel):
    """The shape a model's summary must have to be kept (anything else: the offline summary)."""
    model_config = ConfigDict(extra="ignore")
    complaint: str = Field(default="", max_length=2000)
    symptoms: list[str] = Field(default_factory=list, max_length=50)
    onset: str | None = Field(default=None, max_length=500)
    duration: str | None = Field(default=None, max_length=200)
    severity: int | None = Field(default=None, ge=0, le=10)
    associated: str | None = Field(default=None, max_length=2000)
    taken_so_far: str | None = Field(default=None, max_length=2000)
    vitals: dict[str, str | int | float] = Field(default_factory=dict, max_length=20)
    history: list[str] = Field(default_factory=list, max_length=50)
    allergies: list[str] = Field(default_factory=list, max_length=50)
    current_medicines: list[str] = Field(default_factory=list, max_length=50)
    possible_conditions: list[_Condition] = Field(default_factory=list, max_length=10)


class AssistantUnavailable(DomainError):
    status = 503
    code = "assistant-unavailable"


def _context_line(context: Context) -> str:
    parts = [f"Age bracket: {context.age_bracket or 'unknown'}", f"Sex: {context.sex or 'unknown'}",
             f"Allergies on record: {', '.join(context.allergies) or 'none recorded'}",
             f"Current medicines on record: {', '.join(context.medicines) or 'none recorded'}",
             f"Problems on record: {', '.join(context.problems) or 'none recorded'}"]
    line = "Patient context (from the chart, de-identified): " + "; ".join(parts) + "."
    if context.knowledge:
        line += ("\nRelevant entries of the clinic's curated knowledge base (prefer these to your own memory):\n- "
                 + "\n- ".join(context.knowledge))
    return line


def _finished(content: str) -> dict[str, Any] | None:
    """The JSON object of a finished intake, whether sent bare or in a code fence."""
    match = re.search(r"\{.*\}", content, re.S)
    if not match:
        return None
    try:
        found = json.loads(match.group(0))
    except ValueError:
        return None
    return found if isinstance(found, dict) and found.get("done") and isinstance(found.get("summary"), dict) else None


class LlmEngine:
    uses_knowledge = True

    def __init__(self, settings: Settings):
        self.base_url = (settings.llm_base_url or "").rstrip("/")
        self.api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
        self.model = settings.llm_model
        self.timeout = settings.llm_timeout_seconds
        self.name = f"llm:{self.model}"

    async def reply(self, context: Context, history: list[Turn]) -> Reply:
        messages = [{"role": "system", "content": SYSTEM_PROMPT + "\n" + _context_line(context)}]
        messages += [{"role": "user" if t.role == "patient" else "assistant", "content": t.text} for t in history]
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                r = await client.post(f"{self.base_url}/chat/completions", json={
                    "model": self.model, "messages": messages, "temperature": 0.2},
                    headers={"Authorization": f"Bearer {self.api_key}"})
        except httpx.HTTPError as exc:
            raise AssistantUnavailable("The assistant is not answering right now. Your message was not sent; "
                                       "please try again in a minute.", reason=type(exc).__name__) from None
        if r.status_code != 200:
            raise AssistantUnavailable("The assistant is not answering right now. Your message was not sent; "
                                       "please try again in a minute.", upstream_status=r.status_code)
        try:
            content = r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise AssistantUnavailable("The assistant gave an answer Carebase could not read. Please try again.",
                                       upstream_status=r.status_code) from None
        finished = _finished(content)
        if finished:
            closing = str(finished.get("message") or "Thank you. A doctor will review your answers.")[:2000]
            try:
                summary = _Summary.model_validate(finished["summary"]).model_dump()
            except ValidationError:
                return Reply(closing, done=True, summary=None)  # the service writes the offline summary
            return Reply(closing, done=True, summary={**summary, "engine": self.name})
        return Reply(content.strip())
