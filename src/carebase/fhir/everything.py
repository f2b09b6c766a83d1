"""A patient's whole record as FHIR resources: Patient/$everything and the record export
(``record.fhir.json``), built from the same mappers as every read, so they cannot disagree."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from carebase.encounters import service as encounters
from carebase.fhir.base import BASE_PATH, Ctx, instant
from carebase.fhir.clinical import recorded
from carebase.fhir.directory import organization, practitioner
from carebase.fhir.medications import medication_requests
from carebase.fhir.outside import to_fhir as outside_resource
from carebase.fhir.patient import to_fhir as patient_resource
from carebase.fhir.privacy import consents
from carebase.fhir.scheduling import appointment
from carebase.outside_records import service as outside
from carebase.platform.authz import parse_smart_scopes
from carebase.platform.errors import Forbidden, NotFound
from carebase.prescribing import service as prescribing
from carebase.providers import service as providers
from carebase.scheduling import service as scheduling
from carebase.tenants import service as tenants


async def everything(ctx: Ctx, patient_id: uuid.UUID | None) -> list[dict[str, Any]]:
    """The patient, their organization, the practitioners who saw them, every encounter with what
    it recorded, their prescriptions, appointments and consents, and their outside records. ``patient_id`` None: the caller's
    own record. Reading it is an audited read of the patient (in the chart)."""
    chart = await encounters.chart(ctx.session, ctx.principal, patient_id)
    p = chart["patient"]
    out = [patient_resource(p), organization(await tenants.current_tenant(ctx.session, ctx.principal))]
    for provider_id in dict.fromkeys(e.provider_id for e in chart["encounters"]):
        try:
            out.append(practitioner(await providers.get_provider(ctx.session, ctx.principal, provider_id)))
        except NotFound:  # the directory has no delete today; if it ever does, the record still exports
            pass
    for e in sorted(chart["encounters"], key=lambda x: (x.occurred_at, x.id)):
        out += recorded(e)
    # What the caller's role does not show (a nurse and prescriptions) is left out, not refused.
    try:
        for rx in await prescribing.of_patient(ctx.session, ctx.principal, p.id):
            out += medication_requests(rx)
    except (Forbidden, NotFound):
        pass
    try:
        out += [appointment(a) for a in await scheduling.list_appointments(
            ctx.session, ctx.principal, patient_id=p.id, limit=10_000)]
    except (Forbidden, NotFound):
        pass
    out += consents(p)
    # What other systems sent about them, and the practitioners and places those records name.
    out += [outside_resource(r) for r in await outside.of_patient(ctx.session, ctx.principal, p.id)]
    return _within_scope(ctx, out)


def _within_scope(ctx: Ctx, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if ctx.principal.scope is None:
        return resources
    scopes, _ = parse_smart_scopes(ctx.principal.scope)
    return [r for r in resources if any(s.grants(r["resourceType"], "r") for s in scopes)]


def bundle(ctx: Ctx, resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """A searchset ($everything) or collection (the export) Bundle of these resources, each entry
    addressed by its URL on this server (the response validates it, as every FHIR response)."""
    now = instant(datetime.now(UTC))
    entries = [{"fullUrl": f"{ctx.base_url}{BASE_PATH}/{r['resourceType']}/{r['id']}", "resource": r}
               for r in resources]
    if kind == "searchset":
        for entry in entries:
            entry["search"] = {"mode": "match"}
    out: dict[str, Any] = {"resourceType": "Bundle", "meta": {"lastUpdated": now}, "type": kind, "entry": entries}
    if kind == "searchset":
        out["total"] = len(entries)
    else:
        out["timestamp"] = now
    return out
