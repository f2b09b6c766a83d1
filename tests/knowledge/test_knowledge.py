"""The knowledge base: enough of it, well-formed, cross-referenced, and searchable in PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from carebase.knowledge import service as knowledge
from carebase.knowledge.catalog import GROUPS, catalog, digest
from tests.conftest import run_db


def test_the_issue_s_sizes_with_sources():
    kb = catalog()
    assert len(kb.medicines) >= 500
    assert len(kb.conditions) >= 100
    assert all(m.sources for m in kb.medicines.values()) and all(c.sources for c in kb.conditions)
    # Every field the safety rules need is there for (nearly) every medicine.
    assert sum(1 for m in kb.medicines.values() if m.adult_dose or m.child_dose) >= 0.9 * len(kb.medicines)
    assert sum(1 for m in kb.medicines.values() if m.interactions) >= 0.8 * len(kb.medicines)
    assert sum(1 for c in kb.conditions if c.red_flags) >= 0.9 * len(kb.conditions)


def test_names_are_unique_across_files_and_synonyms_resolve():
    kb = catalog()
    assert kb.medicine("acetaminophen").generic == "paracetamol"
    assert kb.medicine("Albuterol").generic == "salbutamol"
    assert kb.medicine(" AMOXICILLIN ").generic == "amoxicillin"
    assert kb.medicine("unobtainium") is None


def test_cross_references_resolve():
    """An interaction or a first-line medicine that names nothing the knowledge base knows can
    never fire: most must resolve (some name medicines outside it, e.g. contrast media)."""
    kb = catalog()
    targets = [i.with_.casefold() for m in kb.medicines.values() for i in m.interactions]
    known = [t for t in targets if kb.medicine(t) or t in GROUPS]
    assert len(known) >= 0.85 * len(targets), sorted({t for t in targets if not kb.medicine(t) and t not in GROUPS})
    first_line = [f.generic for c in kb.conditions for f in c.first_line]
    resolved = [g for g in first_line if kb.medicine(g)]
    assert len(resolved) >= 0.85 * len(first_line), sorted({g for g in first_line if not kb.medicine(g)})


def test_conditions_for_what_a_patient_says():
    best = [c.name.casefold() for c, _ in knowledge.conditions_for("runny nose, sneezing and a sore throat")]
    assert any("cold" in n or "upper respiratory" in n for n in best[:3]), best


# -- the searchable copy in PostgreSQL ----------------------------------------------------------


def test_the_knowledge_base_is_loaded_after_migrations(backend, owner):
    kb = catalog()
    loaded = owner.execute("SELECT digest, rows FROM reference_data WHERE name = 'knowledge'").fetchone()
    assert loaded == (digest(), len(kb.medicines) + len(kb.conditions))
    counts = dict(owner.execute("SELECT kind, count(*) FROM kb_entries GROUP BY kind").fetchall())
    assert counts == {"medicine": len(kb.medicines), "condition": len(kb.conditions)}


def test_an_unchanged_knowledge_base_is_not_reloaded(backend, owner):
    from carebase.platform import migrations

    before = owner.execute("SELECT loaded_at FROM reference_data WHERE name = 'knowledge'").fetchone()[0]
    migrations.upgrade(backend.urls.owner)
    assert owner.execute("SELECT loaded_at FROM reference_data WHERE name = 'knowledge'").fetchone()[0] == before


@pytest.mark.parametrize(("query", "kind", "expected"), [
    ("acetaminophen", "medicine", "paracetamol"),
    ("albuterol inhaler", "medicine", "salbutamol"),
    ("I have a runny nose and sneezing", "condition", "cold"),
    ("burning when I pee", "condition", "urinary"),
])
def test_full_text_search(backend, query, kind, expected):
    async def go(session):
        return await knowledge.search(session, query, kind=kind, limit=5)

    hits = run_db(backend, go, owner=False)
    assert any(expected in h.key.casefold() or expected in h.title.casefold() for h in hits[:3]), hits
    assert hits == sorted(hits, key=lambda h: -h.rank)


def test_the_app_reads_the_knowledge_base_but_cannot_change_it(backend):
    with psycopg.connect(backend.app_dsn, autocommit=True) as app:
        assert app.execute("SELECT count(*) FROM kb_entries").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM kb_entries")
