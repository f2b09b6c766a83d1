"""PHI stripping (issue 6): recall on a corpus of patients' messages with planted identifiers.

tests/consult/phi_corpus.json holds fictional patients' records and 220+ messages, each listing
the identifiers planted in it: pieces of the patient's own record ("own") and everyone else's
(phones, e-mails, dates, ids, addresses, ages over 89, other people's names). An identifier counts
as found when every letter and digit of it lies inside what ``phi.find`` replaces. The ceiling is
1.0 (all found); targets from the issue: ≥ 0.99 on the patient's own identifiers, ≥ 0.95 overall.

Also printed, for reading the recall: how much of the text that is *not* an identifier was
stripped anyway (doses and durations must survive, or the model cannot help).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from bench.harness import ROOT, Row, log
from carebase.consult import phi

CORPUS = ROOT / "tests" / "consult" / "phi_corpus.json"
TARGET_OWN = 0.99
TARGET_ALL = 0.95


def identity(record: dict) -> phi.Identity:
    return phi.Identity(
        given_name=record.get("given_name", ""), family_name=record.get("family_name", ""),
        other_names=tuple(record.get("other_names", ())), phone=record.get("phone"), email=record.get("email"),
        address=record.get("address"),
        birth_date=date.fromisoformat(record["birth_date"]) if record.get("birth_date") else None,
        ids=tuple(v for k in ("mrn", "national_id", "global_id") if (v := record.get(k))))


@dataclass
class Score:
    found: dict[str, int] = field(default_factory=dict)
    planted: dict[str, int] = field(default_factory=dict)
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, identifier, message)
    other_chars: int = 0  # letters and digits outside every planted identifier
    other_stripped: int = 0  # … of which stripped anyway
    messages: int = 0
    seconds: float = 0.0

    def recall(self, kind: str | None = None) -> float:
        kinds = [kind] if kind else list(self.planted)
        planted = sum(self.planted.get(k, 0) for k in kinds)
        return sum(self.found.get(k, 0) for k in kinds) / planted if planted else 1.0


def score(path: Path = CORPUS) -> Score:
    corpus = json.loads(path.read_text(encoding="utf-8"))
    people = {p["key"]: identity(p) for p in corpus["patients"]}
    s = Score()
    started = time.perf_counter()
    for message in corpus["messages"]:
        text = message["text"]
        spans = phi.find(text, people[message["patient"]])
        s.messages += 1
        covered = [False] * len(text)
        for start, end, _ in spans:
            for i in range(start, end):
                covered[i] = True
        planted_at = [False] * len(text)
        for ident in message["identifiers"]:
            kind = "own" if ident["kind"] == "own" else "other"
            s.planted[kind] = s.planted.get(kind, 0) + 1
            at = text.find(ident["text"])
            chars = [i for i in range(at, at + len(ident["text"])) if text[i].isalnum()]
            for i in range(at, at + len(ident["text"])):
                planted_at[i] = True
            if at >= 0 and all(covered[i] for i in chars):
                s.found[kind] = s.found.get(kind, 0) + 1
            else:
                s.missed.append((ident["kind"], ident["text"], text))
        for i, c in enumerate(text):
            if c.isalnum() and not planted_at[i]:
                s.other_chars += 1
                s.other_stripped += covered[i]
    s.seconds = time.perf_counter() - started
    return s


def run(settings, urls, seconds: float, tmp: Path) -> list[Row]:
    log("PHI stripping (issue 6): recall on tests/consult/phi_corpus.json")
    s = score()
    log(f"  {s.messages} messages, {s.planted.get('own', 0)} of the patient's own identifiers and "
        f"{s.planted.get('other', 0)} others planted; {1000 * s.seconds / s.messages:.2f} ms per message")
    for kind, ident, text in s.missed[:15]:
        log(f"  missed ({kind}): {ident!r} in {text[:90]!r}")
    over = s.other_stripped / s.other_chars if s.other_chars else 0.0
    return [
        Row("PHI recall, the patient's own identifiers (ceiling: all found)", s.recall("own"), 1.0, s.recall("own"),
            f">= {TARGET_OWN}", s.recall("own") >= TARGET_OWN),
        Row("PHI recall, every planted identifier", s.recall(), 1.0, s.recall(), f">= {TARGET_ALL}",
            s.recall() >= TARGET_ALL),
        Row("  (reference) share of other letters and digits stripped too", over, None, None, "-", None),
    ]
