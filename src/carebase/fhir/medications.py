"""MedicationRequest: one per medicine of a prescription (``<prescription id>-<n>``), grouped by
the prescription's id; drafts of the assistant are proposals until a physician decides."""

from __future__ import annotations

import re
from typing import Any

from carebase.fhir.base import (
    SID,
    Ctx,
    Page,
    Query,
    Resource,
    instant,
    meta,
    parent_id,
    pick,
    ref,
    resource,
    strip_empty,
)
from carebase.fhir.search import page_in_memory
from carebase.outside_records.index import parse_date
from carebase.platform.errors import Malformed
from carebase.prescribing import service as prescribing

_STATUS = {"draft": "draft", "approved": "active", "rejected": "cancelled", "revoked": "stopped"}
_ID = re.compile(r"^([0-9a-f-]{36})-(\d{1,3})$")


def _version(p: prescribing.Prescription) -> int:
    # Prescriptions are rows, not event streams: each change moves updated_at, which is the version.
    return int(p.updated_at.timestamp() * 1000)


def medication_requests(p: prescribing.Prescription) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(p.items):
        dose = item.get("dose")
        out.append(strip_empty({
            "resourceType": "MedicationRequest", "id": f"{p.id}-{i}", "meta": meta(_version(p), p.updated_at),
            "status": _STATUS.get(p.status, "unknown"),
            "intent": "proposal" if p.status == "draft" and p.source == "assistant" else "order",
            "groupIdentifier": {"system": SID + "prescription", "value": str(p.id)},
            "medicationCodeableConcept": {"text": item.get("medicine")},
            "subject": ref("Patient", p.patient_id),
            "authoredOn": instant(p.reviewed_at or p.created_at),
            "reasonCode": [{"text": p.diagnosis}] if p.diagnosis else None,
            "note": [{"text": p.notes}] if p.notes else None,
            "dosageInstruction": [{
                "text": item.get("instructions"),
                "timing": {"repeat": strip_empty({
                    "frequency": item.get("times_per_day"), "period": 1 if item.get("times_per_day") else None,
                    "periodUnit": "d" if item.get("times_per_day") else None,
                    "boundsDuration": {"value": item["duration_days"], "unit": "d", "system": "http://unitsofmeasure.org",
                                       "code": "d"} if item.get("duration_days") else None})},
                "doseAndRate": [{"doseQuantity": {"value": dose, "unit": item.get("unit")}}]
                if isinstance(dose, (int, float)) else None,
            }],
        }))
    return out


@resource
class MedicationRequestResource(Resource):
    type = "MedicationRequest"
    search_params = {"patient": "reference", "subject": "reference", "status": "token", "intent": "token"}
    sort_params = ("_lastUpdated", "authoredon")
    # authoredOn as the instant it names: outside records spell it in their senders' time zones.
    sort_keys = {"_lastUpdated": lambda r: r["meta"]["lastUpdated"],
                 "authoredon": lambda r: parse_date(r.get("authoredOn"))}
    includes = {"patient": ("Patient", "subject")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        p = await prescribing.get(ctx.session, ctx.principal, parent_id(_ID, rid, self.type))
        return pick(medication_requests(p), rid, self.type)

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        patient_id = q.reference("Patient", "patient", "subject")
        if patient_id is None and ctx.principal.can("manage:prescriptions"):
            raise Malformed("Search MedicationRequest by patient (patient=Patient/<id>).", code="patient-required")
        found = await prescribing.of_patient(ctx.session, ctx.principal, patient_id)
        out = [r for p in found for r in medication_requests(p)]
        for param in ("status", "intent"):
            for values in q.each(param):
                out = [r for r in out if r[param] in values]
        return page_in_memory(out, q, self.sort_keys)
