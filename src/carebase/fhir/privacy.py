"""Consent (the patient's GDPR, HIPAA and data-sharing choices) and AuditEvent (the read audit:
who saw whose record, when and why)."""

from __future__ import annotations

import re
from typing import Any

from carebase.audit import service as audit
from carebase.fhir.base import (
    SID,
    Ctx,
    Page,
    Query,
    Resource,
    as_uuid,
    date_matches,
    date_range,
    instant,
    meta,
    no_such,
    parent_id,
    pick,
    ref,
    resource,
    strip_empty,
)
from carebase.fhir.search import page_in_memory
from carebase.patients import service as patients
from carebase.platform.errors import Malformed

_KINDS = {"gdpr": "gdpr", "hipaa": "hipaa", "data-sharing": "data_sharing"}
_CONSENT_ID = re.compile(r"^([0-9a-f-]{36})-(gdpr|hipaa|data-sharing)$")
_POLICIES = {"gdpr": "https://eur-lex.europa.eu/eli/reg/2016/679/oj",
             "hipaa": "https://www.hhs.gov/hipaa/for-professionals/privacy/index.html",
             "data_sharing": SID + "policy/data-sharing"}


def consents(p: patients.Patient) -> list[dict[str, Any]]:
    out = []
    for kind, state in p.consents().items():
        if state["given_at"] is None and state["withdrawn_at"] is None:
            continue  # never asked: no consent record
        slug = kind.replace("_", "-")
        out.append(strip_empty({
            "resourceType": "Consent", "id": f"{p.id}-{slug}", "meta": meta(p.version, p.updated_at),
            "status": "active" if state["given"] else "inactive",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}],
                          "text": kind.replace("_", " ")}],
            "patient": ref("Patient", p.id),
            "dateTime": instant(state["withdrawn_at"] if not state["given"] else state["given_at"]),
            "policy": [{"uri": _POLICIES[kind]}],
            "provision": {"type": "permit" if state["given"] else "deny"},
        }))
    return out


@resource
class ConsentResource(Resource):
    type = "Consent"
    search_params = {"patient": "reference", "status": "token", "category": "token"}
    sort_params = ("_lastUpdated",)
    includes = {"patient": ("Patient", "patient")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        p = await patients.get_patient(ctx.session, ctx.principal, parent_id(_CONSENT_ID, rid, self.type))
        return pick(consents(p), rid, self.type)

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        patient_id = q.reference("Patient", "patient")
        if patient_id:
            p = await patients.get_patient(ctx.session, ctx.principal, patient_id)
        elif not ctx.principal.can("read:patients"):
            p = await patients.own_patient(ctx.session, ctx.principal)
        else:
            raise Malformed("Search Consent by patient (patient=Patient/<id>).", code="patient-required")
        found = consents(p)
        for values in q.each("status"):
            found = [c for c in found if c["status"] in values]
        for values in q.each("category"):
            found = [c for c in found if c["category"][0]["text"].replace(" ", "-") in values
                     or c["category"][0]["text"].replace(" ", "_") in values]
        return page_in_memory(found, q, {"_lastUpdated": lambda r: r["meta"]["lastUpdated"]})


def audit_event(r: audit.ReadRecord) -> dict[str, Any]:
    return strip_empty({
        "resourceType": "AuditEvent", "id": str(r.id), "meta": meta(1, r.at),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}],
        "action": "R", "recorded": instant(r.at), "outcome": "0",
        "purposeOfEvent": [{"coding": [{"system": SID + "purpose-of-use", "code": r.purpose}], "text": r.purpose}],
        "agent": [{"type": {"text": r.actor_roles}, "who": {"identifier": {"system": SID + "account",
                                                                           "value": str(r.actor_account_id)}},
                   "requestor": True}],
        "source": {"site": "Carebase", "observer": {"display": "Carebase"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": [{"what": ref("Patient", r.patient_id), "type": {"code": "1", "display": "Person",
                                                                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type"}},
                   {"what": {"identifier": {"system": SID + "record/" + r.record_type, "value": str(r.record_id)}},
                    "type": {"code": "2", "display": "System Object",
                             "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type"}}
                   if r.record_id else None],
    })


@resource
class AuditEventResource(Resource):
    type = "AuditEvent"
    search_params = {"patient": "reference", "agent": "token", "date": "date"}
    versioned = False
    includes = {"patient": ("Patient", "entity")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        if not rid.isdigit():
            raise no_such(self.type, rid)
        return audit_event(await audit.get_read(ctx.session, ctx.principal, int(rid)))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        """Newest first; the trail is long, so pages come without a total."""
        ctx.allow(self.type, "s")
        patient_id = q.reference("Patient", "patient")
        agents = [v.split("|")[-1] for vs in q.each("agent") for v in vs]
        if len(set(agents)) > 1:
            raise Malformed("Name at most one agent.", code="bad-search-value")
        dates = [date_range(v[0], "date") for v in q.each("date")]
        want = q.offset + q.count + 1
        out: list[dict[str, Any]] = []
        before = None
        while len(out) < want:
            rows = await audit.list_reads(ctx.session, ctx.principal,
                                          patient_id=patient_id,
                                          actor_account_id=as_uuid(agents[0], "AuditEvent") if agents else None,
                                          before=before, limit=500)
            if not rows:
                break
            before = rows[-1].id
            out += [audit_event(r) for r in rows if all(date_matches(b, r.at) for b in dates)]
            floors = [b[1] for b in dates if b[0] in ("ge", "gt", "eq")]
            if floors and rows[-1].at < max(floors):
                break  # walking back in time, already before a range's start: nothing older matches
        return Page(out[q.offset:q.offset + q.count], None, more=len(out) > q.offset + q.count)
