"""The knowledge base, for the other domains: medicines by any of their names, their groups, and
conditions by what a patient says. Read-only, shipped with the code (``catalog.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.knowledge.catalog import Catalog, Condition, Medicine
from carebase.knowledge.catalog import catalog as _catalog
from carebase.knowledge.catalog import digest as _catalog_digest
from carebase.knowledge import vectors
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
    """(Re)load the searchable copy when the shipped files changed since the last load, and its
    embeddings where the server has pgvector and the ``ai`` extra is installed."""
    if conn.execute(text("SELECT to_regclass('kb_entries')")).scalar() is None:
        return  # migrated below the knowledge base
    digest = _catalog_digest()
    if _loaded_digest(conn, "knowledge") != digest:
        rows = _rows()
        conn.execute(kb_entries.delete())  # the embeddings go with them (ON DELETE CASCADE)
        conn.execute(kb_entries.insert(), rows)
        _record(conn, "knowledge", digest, len(rows))
    _load_vectors(conn)


def _loaded_digest(conn: Connection, name: str) -> str | None:
    return conn.execute(select(reference_data.c.digest).where(reference_data.c.name == name)).scalar()


def _record(conn: Connection, name: str, digest: str, rows: int) -> None:
    conn.execute(insert(reference_data).values(name=name, digest=digest, rows=rows)
                 .on_conflict_do_update(index_elements=["name"], set_={"digest": digest, "rows": rows,
                                                                      "loaded_at": func.now()}))


def _load_vectors(conn: Connection) -> None:
    if not vectors.installed() or conn.execute(text("SELECT to_regclass('kb_vectors')")).scalar() is None:
        return
    digest = hashlib.sha256(f"{_catalog_digest()} {vectors.MODEL}".encode()).hexdigest()
    count = conn.execute(text("SELECT count(*) FROM kb_vectors")).scalar()
    if _loaded_digest(conn, "knowledge-vectors") == digest and count == conn.execute(
            select(func.count()).select_from(kb_entries)).scalar():
        return
    entries = conn.execute(select(kb_entries.c.kind, kb_entries.c.key, kb_entries.c.title, kb_entries.c.body)
                           .order_by(kb_entries.c.kind, kb_entries.c.key)).all()
    embeddings = vectors.embed([vectors.passage(e.title, e.body) for e in entries])
    conn.execute(text("DELETE FROM kb_vectors"))
    conn.execute(text("INSERT INTO kb_vectors (kind, key, embedding) VALUES (:kind, :key, CAST(:embedding AS vector))"),
                 [{"kind": e.kind, "key": e.key, "embedding": v} for e, v in zip(entries, embeddings, strict=True)])
    _record(conn, "knowledge-vectors", digest, len(entries))


@dataclass(frozen=True)
class Hit:
    kind: str
    key: str
    title: str
    rank: float
    data: dict
    via: str = "text"  # text | vector | text+vector: which retrieval found it


def _any_word(query: str) -> str:
    """A tsquery source matching any of the words (empty when there are none)."""
    return " | ".join(sorted({w for w in re.findall(r"[a-z0-9]+", query.casefold()) if len(w) > 1}))


async def search(session: AsyncSession, query: str, *, kind: str | None = None, limit: int = 10) -> list[Hit]:
    """The knowledge base's entries for a patient's or a clinician's words, best first: full text,
    joined by vector similarity where the ``ai`` extra and pgvector are both there."""
    if vectors.installed() and (await session.execute(text("SELECT to_regclass('kb_vectors')"))).scalar():
        return await hybrid_search(session, query, kind=kind, limit=limit)
    return await text_search(session, query, kind=kind, limit=limit)


async def text_search(session: AsyncSession, query: str, *, kind: str | None = None, limit: int = 10) -> list[Hit]:
    """Full-text search, any word counting (a patient's sentence, not a search box): entries
    matching more of the words, and in their names, rank first."""
    words = _any_word(query)
    if not words:
        return []
    q = func.to_tsquery("english", words)
    rank = func.ts_rank(kb_entries.c.search, q)
    stmt = (select(kb_entries.c.kind, kb_entries.c.key, kb_entries.c.title, rank.label("rank"), kb_entries.c.data)
            .where(kb_entries.c.search.bool_op("@@")(q)).order_by(rank.desc(), kb_entries.c.key).limit(limit))
    if kind:
        stmt = stmt.where(kb_entries.c.kind == kind)
    return [Hit(r.kind, r.key, r.title, float(r.rank), r.data) for r in (await session.execute(stmt)).all()]


# Below this cosine similarity a "nearest" entry is only the least unrelated one (all-MiniLM-L6-v2
# puts unrelated medical sentences around 0.1-0.25, a paraphrase of a condition's symptoms above 0.4).
VECTOR_MIN_SIMILARITY = 0.3
_RRF_K = 60  # reciprocal-rank fusion's usual constant: a top-1 in one list ~ a top-3 in both

_HYBRID = text("""
WITH q AS (SELECT CAST(:embedding AS vector) AS v),
by_vector AS (
    SELECT kind, key, row_number() OVER (ORDER BY embedding <=> q.v, key) AS r
    FROM kb_vectors, q
    WHERE (CAST(:kind AS text) IS NULL OR kind = :kind) AND 1 - (embedding <=> q.v) >= :min_similarity
    ORDER BY embedding <=> q.v, key LIMIT :depth),
by_text AS (
    SELECT kind, key, row_number() OVER (ORDER BY ts_rank(search, to_tsquery('english', :tsquery)) DESC, key) AS r
    FROM kb_entries
    WHERE :tsquery <> '' AND search @@ to_tsquery('english', :tsquery)
      AND (CAST(:kind AS text) IS NULL OR kind = :kind)
    ORDER BY r LIMIT :depth)
SELECT e.kind, e.key, e.title, e.data,
       coalesce(1.0 / (:k + v.r), 0) + coalesce(1.0 / (:k + t.r), 0) AS rank,
       concat_ws('+', CASE WHEN t.r IS NOT NULL THEN 'text' END, CASE WHEN v.r IS NOT NULL THEN 'vector' END) AS via
FROM by_vector v FULL JOIN by_text t USING (kind, key)
JOIN kb_entries e USING (kind, key)
ORDER BY rank DESC, e.key LIMIT :limit""")


async def vector_search(session: AsyncSession, query: str, *, kind: str | None = None,
                        limit: int = 10) -> list[Hit]:
    """Entries by meaning alone (needs the ``ai`` extra and pgvector): rank is cosine similarity."""
    [embedding] = await asyncio.to_thread(vectors.embed, [query])
    rows = await session.execute(text("""
        SELECT e.kind, e.key, e.title, e.data, 1 - (v.embedding <=> CAST(:embedding AS vector)) AS rank
        FROM kb_vectors v JOIN kb_entries e USING (kind, key)
        WHERE CAST(:kind AS text) IS NULL OR v.kind = :kind
        ORDER BY v.embedding <=> CAST(:embedding AS vector), v.key LIMIT :limit"""),
        {"embedding": embedding, "kind": kind, "limit": limit})
    return [Hit(r.kind, r.key, r.title, float(r.rank), r.data, "vector") for r in rows.all()]


async def hybrid_search(session: AsyncSession, query: str, *, kind: str | None = None,
                        limit: int = 10) -> list[Hit]:
    """Full text and vector similarity fused by reciprocal rank: a medicine's exact name still
    wins, and "my heart keeps racing" finds palpitations though no word is shared."""
    if not query.strip():
        return []
    [embedding] = await asyncio.to_thread(vectors.embed, [query])
    rows = await session.execute(_HYBRID, {
        "embedding": embedding, "tsquery": _any_word(query), "kind": kind, "limit": limit, "k": _RRF_K,
        "depth": max(limit, 20) * 2, "min_similarity": VECTOR_MIN_SIMILARITY})
    return [Hit(r.kind, r.key, r.title, float(r.rank), r.data, r.via) for r in rows.all()]
