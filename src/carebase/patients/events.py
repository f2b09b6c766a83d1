"""Patient events: demographics are PHI and travel sealed with the patient's own key.

Projectors only write (they run in the event store's pipeline): every value comes from the event.
"""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.patients.models import patients
from carebase.platform.eventstore import StoredEvent, projector

REGISTERED = "patients.registered"
UPDATED = "patients.updated"
CONSENT_CHANGED = "patients.consent_changed"
EMAIL_VERIFIED = "patients.email_verified"
MERGED = "patients.merged"
ERASED = "patients.erased"

# Sealed in the log, erased by crypto-shredding.
PHI_FIELDS = ("given_name", "family_name", "birth_date", "phone", "email", "emergency_contact_name",
              "emergency_contact_relationship", "emergency_contact_phone")
# Kept in clear in the log: not identifying on their own.
PLAIN_FIELDS = ("gender", "country", "timezone", "preferred_language")

# Events written before the seed's M/F/O/U codes carried a "sex" word.
_LEGACY_SEX = {"female": "F", "male": "M", "other": "O", "unknown": "U"}


def fold(text: str) -> str:
    """Lower case, accents stripped, punctuation to spaces: 'Zoë O'Brien' -> 'zoe o brien'."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in bare).split())


def _phi_values(phi: dict | None) -> dict:
    if not phi:
        return {}
    out = {k: phi[k] for k in PHI_FIELDS if k in phi}
    if out.get("birth_date"):
        out["birth_date"] = date.fromisoformat(out["birth_date"])
    return out


def _plain_values(data: dict) -> dict:
    out = {k: data[k] for k in PLAIN_FIELDS if k in data}
    if "sex" in data and "gender" not in data:
        out["gender"] = _LEGACY_SEX.get(data["sex"], "U")
    return out


def _search_name(values: dict) -> dict:
    if "given_name" in values and "family_name" in values:
        return {"search_name": fold(f"{values['given_name'] or ''} {values['family_name'] or ''}")}
    return {}


def values_of(ev: StoredEvent) -> dict:
    """The register columns an event sets: what its projector writes, and what ``replay`` folds
    into a past version of the record (FHIR vread and history)."""
    d = ev.data
    stamp = {"updated_at": ev.recorded_at, "version": ev.version}
    if ev.type == REGISTERED:
        values = {**_plain_values(d), **_phi_values(ev.phi)}
        return {"id": ev.stream_id, "tenant_id": ev.tenant_id, "mrn": d["mrn"], "global_id": d.get("global_id"),
                "account_id": uuid.UUID(d["account_id"]) if d.get("account_id") else None,
                "government_id_system": d.get("government_id_system"),
                "government_id_hash": d.get("government_id_hash"),
                "government_id_last4": d.get("government_id_last4"), "created_at": ev.recorded_at,
                **stamp, **values, **_search_name(values)}
    if ev.type == UPDATED:
        values = {**_plain_values(d), **_phi_values(ev.phi)}
        if "email" in values:
            values["email_verified_at"] = None  # a new address has to be verified again
        if "search_name" in (ev.phi or {}):
            # A name change carries the whole folded name (sealed, it is PHI), so this needs no read.
            values["search_name"] = ev.phi["search_name"]
        return {**stamp, **values}
    if ev.type == CONSENT_CHANGED:
        kind = d["kind"]
        if d["given"]:
            return {**stamp, f"{kind}_consent_at": ev.recorded_at, f"{kind}_withdrawn_at": None}
        return {**stamp, f"{kind}_withdrawn_at": ev.recorded_at}
    if ev.type == MERGED:
        return {**stamp, "merged_into": uuid.UUID(d["into"]), "merged_at": ev.recorded_at}
    if ev.type == ERASED:
        return {**stamp, **{f: None for f in PHI_FIELDS}, "account_id": None, "search_name": None,
                "government_id_hash": None, "government_id_last4": None, "email_verified_at": None,
                "erased_at": ev.recorded_at}
    return stamp  # EMAIL_VERIFIED: conditional on the address, see its projector and replay


def replay(stream: list[StoredEvent]) -> list[tuple[StoredEvent, dict]]:
    """Each event of one patient's stream with the record as it stood right after it."""
    state: dict = {c.name: None for c in patients.columns}
    out = []
    for ev in stream:
        state = {**state, **values_of(ev)}
        if ev.type == EMAIL_VERIFIED and state.get("email") == (ev.phi or {}).get("email"):
            state["email_verified_at"] = ev.recorded_at
        out.append((ev, state))
    return out


@projector(REGISTERED)
async def _registered(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(insert(patients).values(**values_of(ev)))


@projector(UPDATED, CONSENT_CHANGED, MERGED, ERASED)
async def _changed(session: AsyncSession, ev: StoredEvent) -> None:
    await session.execute(patients.update().where(patients.c.id == ev.stream_id).values(**values_of(ev)))


@projector(EMAIL_VERIFIED)
async def _email_verified(session: AsyncSession, ev: StoredEvent) -> None:
    # Only the address that was verified: if it changed since the link was sent, nothing happens.
    email = (ev.phi or {}).get("email")
    await session.execute(patients.update().where(patients.c.id == ev.stream_id, patients.c.email == email).values(
        email_verified_at=ev.recorded_at))
    await session.execute(patients.update().where(patients.c.id == ev.stream_id).values(**values_of(ev)))
