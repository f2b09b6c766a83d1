"""The intake assistant: one interface, two implementations.

* ``OfflineEngine`` (the embedded default): deterministic, driven by the knowledge base. It works
  out which conditions the patient's words point to, asks the usual intake questions (onset,
  severity, what helps, what was taken) and then that condition's own questions, and after 5–10
  exchanges writes the structured summary. No network, same answers every time.
* ``LlmEngine`` (``consult/llm.py``): any OpenAI-compatible chat-completions endpoint.

An engine sees only what PHI stripping let through: the patient's messages with identifiers
replaced by tokens, and a context without identity (an age bracket, sex, the chart's allergies,
medicines and problems). The summary an engine returns is re-identified by the service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from carebase.knowledge import service as knowledge

MIN_EXCHANGES = 5
MAX_EXCHANGES = 10


@dataclass(frozen=True)
class Turn:
    role: str  # patient | assistant
    text: str


@dataclass(frozen=True)
class Context:
    """What the assistant may know of the patient besides the conversation: nothing identifying."""
    age_bracket: str | None = None
    sex: str | None = None
    allergies: tuple[str, ...] = ()
    medicines: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    # What the knowledge base says about the complaint (full-text search in PostgreSQL): the
    # curated facts a model should lean on, rather than its own memory.
    knowledge: tuple[str, ...] = ()


@dataclass
class Reply:
    text: str
    done: bool = False
    summary: dict[str, Any] | None = None


class Engine(Protocol):
    name: str
    # Whether it reads ``Context.knowledge`` (a full-text search per turn, skipped when not).
    uses_knowledge: bool

    async def reply(self, context: Context, history: list[Turn]) -> Reply: ...


# -- the offline engine ------------------------------------------------------------------------

GENERIC_QUESTIONS = [
    ("onset", "When did this start, and has it been getting better, worse or staying the same?"),
    ("severity", "How bad is it on a scale from 0 (nothing) to 10 (the worst you can imagine)?"),
    ("associated", "Have you noticed anything else with it, such as fever, vomiting, a rash or dizziness? "
                   "What makes it better or worse?"),
    ("taken", "Have you taken any medicine for it so far, and did it help?"),
]
VITALS_QUESTION = ("vitals", "If you have measured them: what were your temperature, blood pressure or pulse? "
                             "(Say 'no' if you have not.)")
# Condition questions that repeat a generic one (their first words).
_ALREADY_ASKED = re.compile(r"^(?:when did|how long|how bad|how severe|have you taken|what have you taken)", re.I)

_DURATION = re.compile(
    r"\b(?:(?:for|since|about|around|over|past|last)\s+)?(\d+(?:\.\d+)?|a|an|one|two|three|four|five|six|seven|"
    r"a few|few|couple of|several)\s*(hours?|hrs?|days?|weeks?|wks?|months?|years?)\b|\b(?:since\s+)?"
    r"(yesterday|today|this morning|last night|last week|tonight)\b", re.I)
_SEVERITY_NUMBER = re.compile(r"\b(10|[0-9])\s*(?:/\s*10|out of 10)?\b")
_SEVERITY_WORD = re.compile(r"\b(mild|moderate|severe|unbearable|slight|bad|very bad|terrible)\b", re.I)
_TEMPERATURE = re.compile(r"\b(3[4-9](?:\.\d)?|4[0-2](?:\.\d)?)\s*°?\s*c?\b"  # Celsius
                          r"|\b(9[5-9](?:\.\d)?|10[0-7](?:\.\d)?)\s*°?\s*f\b", re.I)  # Fahrenheit
_BLOOD_PRESSURE = re.compile(r"\b(\d{2,3})\s*/\s*(\d{2,3})\b")
_PULSE = re.compile(r"\b(?:pulse|heart rate|hr)\D{0,12}(\d{2,3})\b", re.I)
_ALLERGIC = re.compile(r"\ballergic to ([a-z][a-z -]{2,40}?)(?:[.,;]|\band\b|$)", re.I)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.casefold()) if len(w) > 2}


class OfflineEngine:
    name = "offline"
    uses_knowledge = False  # it reads the knowledge base in memory, itself

    def plan(self, said: str) -> tuple[list[tuple[str, str]], list[tuple[Any, float]]]:
        candidates = knowledge.conditions_for(said, limit=3)
        plan = list(GENERIC_QUESTIONS)
        if candidates:
            top = candidates[0][0]
            extra = [q for q in top.questions if not _ALREADY_ASKED.match(q)][:3]
            plan += [(f"condition:{i}", q) for i, q in enumerate(extra)]
        plan.append(VITALS_QUESTION)
        return plan, candidates

    async def reply(self, context: Context, history: list[Turn]) -> Reply:
        said = [t.text for t in history if t.role == "patient"]
        asked = [t.text for t in history if t.role == "assistant"]
        # The plan is fixed by the first message (the complaint), so a later answer cannot
        # reshuffle the questions under the patient.
        plan, _ = self.plan(said[0] if said else "")
        plan = plan[:MAX_EXCHANGES - 1]
        pending = [(key, q) for key, q in plan if not any(q in a for a in asked)]
        if pending and len(said) < MAX_EXCHANGES:
            key, question = pending[0]
            lead = "Thank you. " if asked else "I'm the intake assistant; a doctor will review everything. "
            return Reply(lead + question)
        summary = self.summarise(context, history, plan)
        return Reply("Thank you, that is everything I need. I have written a summary for the doctor, who will "
                     "review it and reply here.", done=True, summary=summary)

    def summarise(self, context: Context, history: list[Turn], plan: list[tuple[str, str]]) -> dict[str, Any]:
        answers: dict[str, str] = {}
        questions = {q: key for key, q in plan}
        for prev, turn in zip(history, history[1:], strict=False):
            if prev.role == "assistant" and turn.role == "patient":
                key = next((k for q, k in questions.items() if q in prev.text), None)
                if key:
                    answers[key] = turn.text
        said = " ".join(t.text for t in history if t.role == "patient")
        complaint = next((t.text for t in history if t.role == "patient"), "")
        candidates = knowledge.conditions_for(complaint or said, limit=3)
        words = _words(said)
        symptoms = sorted({s for c, _ in candidates for s in c.symptoms if _words(s) and _words(s) <= words})
        onset = answers.get("onset", "")
        duration = _DURATION.search(onset) or _DURATION.search(said)
        severity_text = answers.get("severity", "")
        number = _SEVERITY_NUMBER.search(severity_text)
        word = _SEVERITY_WORD.search(severity_text) or _SEVERITY_WORD.search(complaint)
        vitals_text = answers.get("vitals", "")
        vitals: dict[str, Any] = {}
        if (t := _TEMPERATURE.search(vitals_text)):
            vitals["temperature"] = t.group(0).strip()
        if (bp := _BLOOD_PRESSURE.search(vitals_text)):
            vitals["blood_pressure"] = f"{bp.group(1)}/{bp.group(2)}"
        if (p := _PULSE.search(vitals_text)):
            vitals["pulse"] = int(p.group(1))
        mentioned_allergies = [a.strip() for a in _ALLERGIC.findall(said)]
        return {
            "complaint": complaint,
            "symptoms": symptoms,
            "onset": onset or None,
            "duration": duration.group(0) if duration else None,
            "severity": int(number.group(1)) if number else None,
            "severity_words": word.group(1).lower() if word else None,
            "associated": answers.get("associated"),
            "taken_so_far": answers.get("taken"),
            "vitals": vitals,
            "history": list(context.problems),
            "allergies": sorted({*context.allergies, *mentioned_allergies}),
            "current_medicines": list(context.medicines),
            "answers": [{"question": q, "answer": answers[k]} for k, q in plan if k in answers],
            "possible_conditions": [{"code": c.code, "name": c.name, "score": round(score, 2),
                                     "red_flags_to_check": [f.sign for f in c.red_flags][:4]}
                                    for c, score in candidates],
            "engine": self.name,
        }
