"""The chart in the portal: a patient's timeline of encounters, diagnoses, a vitals trend chart,
allergies and medications; clinicians record and sign an encounter from it, and a patient sees
their own chart (read-only)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from carebase.encounters import codes, schemas, service
from carebase.outside_records import service as outside
from carebase.platform.authz import Principal
from carebase.platform.errors import DomainError
from carebase.platform.web import DbSession, PagePrincipal, refusable
from carebase.portal.pages import refusal, render_page
from carebase.providers import service as providers
from carebase.tenants import service as tenants

router = APIRouter(include_in_schema=False)

# What the trend chart draws, in this order (the table under it shows every recorded vital).
TRENDS = (("systolic_mmhg", "Systolic (mmHg)"), ("diastolic_mmhg", "Diastolic (mmHg)"),
          ("heart_rate_bpm", "Heart rate (/min)"), ("temperature_c", "Temperature (°C)"),
          ("weight_kg", "Weight (kg)"), ("spo2_percent", "SpO₂ (%)"))


async def _chart(session, principal: Principal, patient_id: uuid.UUID | None) -> dict:
    chart = await service.chart(session, principal, patient_id)
    tenant = await tenants.current_tenant(session, principal)
    tz = ZoneInfo(tenant.timezone)
    names = {}
    for pid in {e.provider_id for e in chart["encounters"]}:
        try:
            p = await providers.get_provider(session, principal, pid)
            names[pid] = f"Dr {p.given_name} {p.family_name}"
        except DomainError:  # a patient may not read the directory entry; the chart still shows
            names[pid] = "—"
    points = [{**p, "local": datetime.fromisoformat(p["at"]).astimezone(tz).strftime("%Y-%m-%d %H:%M")}
              for p in chart["vitals"]]
    trend = {"labels": [p["local"] for p in points],
             "series": [{"label": label, "data": [p.get(key) for p in points]}
                        for key, label in TRENDS if any(p.get(key) is not None for p in points)]}
    elsewhere = await outside.summary(session, principal, chart["patient"].id)
    return {**chart, "vitals": points, "tz": tz, "providers": names, "trend": trend, "units": codes.VITAL_RANGES,
            "outside": elsewhere, "outside_label": outside.label,
            "own": patient_id is None, "can_record": principal.can("write:charts") and patient_id is not None}


@router.get("/portal/patients/{patient_id}/chart", response_class=HTMLResponse)
async def chart_page(request: Request, patient_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                     appointment_id: uuid.UUID | None = None, signed: uuid.UUID | None = None):
    async def context(p: Principal) -> dict:
        return {**await _chart(session, p, patient_id), "appointment_id": appointment_id, "signed": signed}

    return await render_page(request, session, principal, "encounters/chart.html", context)


@router.get("/portal/my-chart", response_class=HTMLResponse)
async def my_chart_page(request: Request, session: DbSession, principal: PagePrincipal):
    async def context(p: Principal) -> dict:
        return {**await _chart(session, p, None), "appointment_id": None, "signed": None}

    return await render_page(request, session, principal, "encounters/chart.html", context)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _codes(text: str) -> list[str]:
    return [c for c in re.split(r"[\s,;]+", text) if c]


def _form_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = " ".join(str(p) for p in first.get("loc", ()) if not isinstance(p, int)).replace("_", " ")
    return f"{where or 'form'}: {first.get('msg', 'invalid')}"


Text = Annotated[str, Form(max_length=20000)]
Number = Annotated[str, Form(max_length=10)]


@router.post("/portal/patients/{patient_id}/encounters", response_class=HTMLResponse)
async def record_from_page(request: Request, patient_id: uuid.UUID, session: DbSession, principal: PagePrincipal,
                           type: Annotated[str, Form(max_length=20)] = "office_visit",
                           appointment_id: Annotated[str, Form(max_length=36)] = "",
                           chief_complaint: Text = "", diagnoses: Text = "", procedures: Text = "",
                           allergies: Text = "", medications: Text = "", problems: Text = "",
                           treatment_plan: Text = "", follow_up_instructions: Text = "", note: Text = "",
                           systolic_mmhg: Number = "", diastolic_mmhg: Number = "", heart_rate_bpm: Number = "",
                           respiratory_rate: Number = "", temperature_c: Number = "", spo2_percent: Number = "",
                           weight_kg: Number = "", height_cm: Number = ""):
    """One form, one signed encounter. Lists are one entry per line (diagnoses and procedures may
    also be separated by commas); a refusal shows its message next to the form and writes nothing."""
    if principal is None:
        return HTMLResponse("", status_code=401)
    vitals = {k: v.strip() for k, v in (("systolic_mmhg", systolic_mmhg), ("diastolic_mmhg", diastolic_mmhg),
                                         ("heart_rate_bpm", heart_rate_bpm), ("respiratory_rate", respiratory_rate),
                                         ("temperature_c", temperature_c), ("spo2_percent", spo2_percent),
                                         ("weight_kg", weight_kg), ("height_cm", height_cm)) if v.strip()}
    texts = {"chief_complaint": chief_complaint, "treatment_plan": treatment_plan,
             "follow_up_instructions": follow_up_instructions, "note": note}
    try:
        body = schemas.EncounterIn.model_validate({
            "type": type, "appointment_id": appointment_id or None, "vitals": vitals,
            "diagnoses": _codes(diagnoses), "procedures": _codes(procedures),
            "allergies": [{"substance": a} for a in _lines(allergies)],
            "medications": [{"name": m} for m in _lines(medications)],
            "problems": [{"name": p} for p in _lines(problems)],
            **{k: v.strip() or None for k, v in texts.items()}})
    except ValidationError as err:
        return refusal(_form_error(err), "encounter-error", "p")
    content = body.model_dump(exclude={"type", "occurred_at", "provider_id", "appointment_id"})
    done = await refusable(session, lambda: service.record_encounter(
        session, principal, patient_id, type=body.type, appointment_id=body.appointment_id, **content))
    if isinstance(done, DomainError):
        return refusal(done, "encounter-error", "p")
    # Signed: load the chart again, the new encounter marked (a new query string, or the browser
    # would treat a second redirect to the same page as a mere jump to an anchor).
    return Response(status_code=200, headers={
        "HX-Redirect": f"/portal/patients/{patient_id}/chart?signed={done.id}#e-{done.id}"})
