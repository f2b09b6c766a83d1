"""The knowledge base, for the other domains: medicines by any of their names, their groups, and
conditions by what a patient says. Read-only, shipped with the code (``catalog.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.knowledge.catalog import Catalog, Condition, Medicine
from carebase.knowledge.catalog import catalog as _catalog
from carebase.knowledge.catalog import digest as _catalog_digest
from carebase.knowledge.models import kb_entries, reference_data
from carebase.platform.migrations import after_upgrade


def catalog() -> Catalog:
    return _catalog()


def medicine(name: str) -> Medicine | None:
    return _catalog().medicine(name)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.casefold()) if len(w) > 2}


def conditions_for(text: str, limit: int = 5) -> list[tuple[Condition, float]]:
    """Conditions whose symptoms, name or synonyms a patient's words touch, best first: the intake
    engine's starting points for its follow-up questions."""
    said = _words(text)
    if not said:
        return []
    scored = []
    for c in _catalog().conditions:
        score = 0.0
        for phrase in (*c.symptoms, *c.synonyms, c.name):
            words = _words(phrase)
            if words and words <= said:
                score += 1 + 0.5 * len(words)  # a whole phrase said: strong, longer phrases stronger
            elif words & said:
                score += 0.25 * len(words & said) / len(words)
        if score:
            scored.append((c, score))
    scored.sort(key=lambda cs: -cs[1])
    return scored[:limit]


# -- the searchable copy in PostgreSQL -----------------------------------------------------------


def _rows() -> list[dict]:
    kb = _catalog()
    rows = []
    for m in kb.medicines.values():
        rows.append({"kind": "medicine", "key": m.generic, "title": " ".join(sorted(m.names)),
                     "body": " ".join([m.class_, *(m.class_group or "",), *m.groups, *m.routes]).replace("-", " "),
                     "data": m.model_dump(mode="json", by_alias=True)})
    for c in kb.conditions:
        rows.append({"kind": "condition", "key": f"{c.code} {c.name}"[:200], "title": " ".join([c.name, *c.synonyms]),
                     "body": " ".join([*c.symptoms, *(f.sign for f in c.red_flags)]),
                     "data": c.model_dump(mode="json", by_alias=True)})
    return rows


@after_upgrade
def load(conn: Connection) -> None:
    """(Re)load the searchable copy when the shipped files changed since the last load."""
    if conn.execute(text("SELECT to_regclass('kb_entries')")).scalar() is None:
        return  # migrated below the knowledge base
    digest = _catalog_digest()
    if conn.execute(select(reference_data.c.digest).where(reference_data.c.name == "knowledge")).scalar() == digest:
        return
    rows = _rows()
    conn.execute(kb_entries.delete())
    conn.execute(kb_entries.insert(), rows)
    conn.execute(insert(reference_data).values(name="knowledge", digest=digest, rows=len(rows))
                 .on_conflict_do_update(index_elements=["name"], set_={"digest": digest, "rows": len(rows),
                                                                      "loaded_at": func.now()}))


@dataclass(frozen=True)
class Hit:
    kind: str
    key: str
    title: str
    rank: float
    data: dict


async def search(session: AsyncSession, query: str, *, kind: str | None = None, limit: int = 10) -> list[Hit]:
    """Full-text search of the knowledge base, any word counting (a patient's sentence, not a
    search box): entries matching more of the words, and in their names, rank first."""
    words = sorted({w for w in re.findall(r"[a-z0-9]+", query.casefold()) if len(w) > 1})
    if not words:
        return []
    q = func.to_tsquery("english", " | ".join(words))
    rank = func.ts_rank(kb_entries.c.search, q)
    stmt = (select(kb_entries.c.kind, kb_entries.c.key, kb_entries.c.title, rank.label("rank"), kb_entries.c.data)
            .where(kb_entries.c.search.bool_op("@@")(q)).order_by(rank.desc(), kb_entries.c.key).limit(limit))
    if kind:
        stmt = stmt.where(kb_entries.c.kind == kind)
    return [Hit(r.kind, r.key, r.title, float(r.rank), r.data) for r in (await session.execute(stmt)).all()]
