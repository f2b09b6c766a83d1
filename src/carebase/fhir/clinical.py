"""The chart in FHIR: Encounter, and the Condition, Observation and AllergyIntolerance resources
recorded in encounters (diagnoses and problems, vitals and lab results, allergies).

A signed encounter is never edited in place, so what it recorded keeps stable ids derived from the
encounter's: ``<encounter id>-dx0`` is its first diagnosis, ``-vs-bp`` its blood pressure, ``-lab2``
its third lab result. Their version is the encounter's (an amendment makes a new one).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from carebase.encounters import service as encounters
from carebase.fhir.base import (
    SID,
    Ctx,
    Page,
    Query,
    Resource,
    Version,
    as_uuid,
    date_matches,
    date_range,
    instant,
    meta,
    no_such,
    parent_id,
    pick,
    ref,
    ref_id,
    resource,
    strip_empty,
    token_matches,
)
from carebase.fhir.search import page_in_memory
from carebase.patients import service as patients
from carebase.platform.errors import Malformed, NotFound
from carebase.providers import service as providers

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ENCOUNTER_TYPE = SID + "encounter-type"
# Encounter.class (v3 ActCode). Lab and imaging visits are outpatient visits.
_CLASS = {"office_visit": ("AMB", "ambulatory"), "telemedicine": ("VR", "virtual"),
          "emergency": ("EMER", "emergency"), "hospital": ("IMP", "inpatient encounter"),
          "lab": ("AMB", "ambulatory"), "imaging": ("AMB", "ambulatory")}

# The chart's vitals as LOINC-coded vital signs: name -> (id suffix, code, display, UCUM code).
VITALS = {
    "heart_rate_bpm": ("hr", "8867-4", "Heart rate", "/min"),
    "respiratory_rate": ("rr", "9279-1", "Respiratory rate", "/min"),
    "temperature_c": ("temp", "8310-5", "Body temperature", "Cel"),
    "spo2_percent": ("spo2", "2708-6", "Oxygen saturation in Arterial blood", "%"),
    "weight_kg": ("weight", "29463-7", "Body weight", "kg"),
    "height_cm": ("height", "8302-2", "Body height", "cm"),
}
# The FHIR vital-signs profile asks for the pulse-oximetry code next to 2708-6 (how we measure it).
SPO2_PULSE_OX = ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
BP = ("bp", "85354-9", "Blood pressure panel with all children optional")
BP_PARTS = {"systolic_mmhg": ("8480-6", "Systolic blood pressure"),
            "diastolic_mmhg": ("8462-4", "Diastolic blood pressure")}
BMI = ("bmi", "39156-5", "Body mass index (BMI) [Ratio]", "kg/m2")
assert set(VITALS) | set(BP_PARTS) == set(encounters.VITAL_UNITS), "every recorded vital needs a LOINC code"
# Lab tests whose LOINC code is known, by the name clinicians type (lower case).
LAB_LOINC = {
    "hba1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
    "hemoglobin a1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
    "glucose": ("2345-7", "Glucose [Mass/volume] in Serum or Plasma"),
    "fasting glucose": ("1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma"),
    "hemoglobin": ("718-7", "Hemoglobin [Mass/volume] in Blood"),
    "creatinine": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
    "total cholesterol": ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
    "cholesterol": ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
    "ldl": ("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation"),
    "hdl": ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma"),
    "triglycerides": ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"),
    "tsh": ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma"),
    "potassium": ("2823-3", "Potassium [Moles/volume] in Serum or Plasma"),
    "sodium": ("2951-2", "Sodium [Moles/volume] in Serum or Plasma"),
    "wbc": ("6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
    "platelets": ("777-3", "Platelets [#/volume] in Blood by Automated count"),
    "alt": ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
    "egfr": ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted"),
    "inr": ("6301-6", "INR in Platelet poor plasma by Coagulation assay"),
}
_FLAG = {"normal": ("N", "Normal"), "low": ("L", "Low"), "high": ("H", "High"), "critical": ("AA", "Critical abnormal")}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_DERIVED = re.compile(r"^([0-9a-f-]{36})-(dx|pb|pr|al|md|lab|vs-)([a-z0-9]+)$")


def _updated(e: encounters.Encounter) -> datetime:
    amended = [a.get("at") for a in e.amendments if isinstance(a, dict) and a.get("at")]
    return max(datetime.fromisoformat(a) for a in amended) if amended else e.signed_at


def _meta(e: encounters.Encounter) -> dict[str, Any]:
    return meta(e.version, _updated(e))


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display} if display else {"system": system, "code": code}


def _category(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(f"http://terminology.hl7.org/CodeSystem/{system}", code, display)]}


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [_coding(f"http://terminology.hl7.org/CodeSystem/{system}", code, code.capitalize())]}


def encounter(e: encounters.Encounter) -> dict[str, Any]:
    code, display = _CLASS.get(e.type, ("AMB", "ambulatory"))
    label = encounters.TYPE_LABELS.get(e.type, e.type)
    return strip_empty({
        "resourceType": "Encounter", "id": str(e.id), "meta": _meta(e), "status": e.status,
        "identifier": [{"system": SID + "visit-number", "value": e.visit_number}] if e.visit_number else None,
        "class": _coding(ACT, code, display),
        "type": [{"coding": [_coding(ENCOUNTER_TYPE, e.type, label)], "text": label}],
        "subject": ref("Patient", e.patient_id),
        "participant": [{"type": [{"coding": [_coding(PARTICIPATION, "PPRF", "primary performer")]}],
                         "individual": ref("Practitioner", e.provider_id)}],
        "appointment": [ref("Appointment", e.appointment_id)] if e.appointment_id else None,
        "period": {"start": instant(e.occurred_at), "end": instant(e.ended_at)},
        "reasonCode": [{"text": e.chief_complaint}] if e.chief_complaint else None,
        # Diagnoses as they stand now: an amendment replaced the list, the amendments keep the old one.
        "diagnosis": [{"condition": ref("Condition", f"{e.id}-dx{i}"), "rank": i + 1}
                      for i in range(len(e.diagnoses))],
        "serviceProvider": ref("Organization", e.tenant_id),
    })


def _common(e: encounters.Encounter) -> dict[str, Any]:
    return {"subject": ref("Patient", e.patient_id), "encounter": ref("Encounter", e.id)}


def conditions(e: encounters.Encounter) -> list[dict[str, Any]]:
    out = []
    for i, dx in enumerate(e.diagnoses):
        out.append(strip_empty({
            "resourceType": "Condition", "id": f"{e.id}-dx{i}", "meta": _meta(e),
            "clinicalStatus": _status("condition-clinical", "active"),
            "verificationStatus": _status("condition-ver-status", "confirmed"),
            "category": [_category("condition-category", "encounter-diagnosis", "Encounter Diagnosis")],
            "code": {"coding": [_coding(ICD10CM, dx.get("code"), dx.get("description"))],
                     "text": dx.get("description") or dx.get("code")},
            **_common(e), "recordedDate": instant(e.signed_at), "asserter": ref("Practitioner", e.provider_id),
        }))
    for i, problem in enumerate(e.problems):
        status = "resolved" if problem.get("status") == "resolved" else "active"
        out.append(strip_empty({
            "resourceType": "Condition", "id": f"{e.id}-pb{i}", "meta": _meta(e),
            "clinicalStatus": _status("condition-clinical", status),
            "category": [_category("condition-category", "problem-list-item", "Problem List Item")],
            "code": {"text": problem.get("name")}, **_common(e), "recordedDate": instant(e.signed_at),
        }))
    return out


def procedures(e: encounters.Encounter) -> list[dict[str, Any]]:
    return [{"resourceType": "Procedure", "id": f"{e.id}-pr{i}", "meta": _meta(e), "status": "completed",
             "code": {"coding": [_coding(CPT, code)], "text": f"CPT {code}"}, **_common(e),
             "performedDateTime": instant(e.occurred_at),
             "performer": [{"actor": ref("Practitioner", e.provider_id)}]}
            for i, code in enumerate(e.procedures)]


def _quantity(name: str, value: Any, ucum: str) -> dict[str, Any]:
    number = value if isinstance(value, int) else float(value)
    return {"value": number, "unit": encounters.VITAL_UNITS[name], "system": UCUM, "code": ucum}


def observations(e: encounters.Encounter) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base = {"meta": _meta(e), "status": "final", **_common(e), "effectiveDateTime": instant(e.occurred_at),
            "performer": [ref("Practitioner", e.provider_id)]}
    vital_signs = [_category("observation-category", "vital-signs", "Vital Signs")]
    v = e.vitals or {}

    def vital(suffix: str, codes: list[dict[str, Any]], **value: Any) -> None:
        out.append({"resourceType": "Observation", "id": f"{e.id}-vs-{suffix}", **base, "category": vital_signs,
                    "code": {"coding": codes, "text": codes[0]["display"]}, **value})

    # Systolic and diastolic travel together as the blood pressure panel (the FHIR vital-signs profile).
    parts = [{"code": {"coding": [_coding(LOINC, code, display)], "text": display},
              "valueQuantity": _quantity(name, v[name], "mm[Hg]")}
             for name, (code, display) in BP_PARTS.items() if v.get(name) is not None]
    if parts:
        vital(BP[0], [_coding(LOINC, BP[1], BP[2])], component=parts)
    for name, (suffix, code, display, ucum) in VITALS.items():
        if v.get(name) is not None:
            codes = [_coding(LOINC, code, display)]
            if name == "spo2_percent":
                codes.append(_coding(LOINC, *SPO2_PULSE_OX))
            vital(suffix, codes, valueQuantity=_quantity(name, v[name], ucum))
    # BMI is not recorded; it is derived from this visit's weight and height, and says so.
    if v.get("weight_kg") and v.get("height_cm"):
        bmi = round(v["weight_kg"] / (v["height_cm"] / 100) ** 2, 1)
        vital(BMI[0], [_coding(LOINC, BMI[1], BMI[2])],
              valueQuantity={"value": bmi, "unit": BMI[3], "system": UCUM, "code": BMI[3]},
              derivedFrom=[ref("Observation", f"{e.id}-vs-weight"), ref("Observation", f"{e.id}-vs-height")])
    for i, lab in enumerate(e.lab_results):
        known = LAB_LOINC.get(str(lab.get("test", "")).strip().lower())
        raw = str(lab.get("value", "")).strip()
        if _NUMBER.match(raw):
            # The unit was typed by the clinician, not checked against UCUM: shown, not coded.
            result: dict[str, Any] = {"valueQuantity": {"value": float(raw) if "." in raw else int(raw),
                                                        "unit": lab.get("unit")}}
        else:
            result = {"valueString": raw + (f" {lab['unit']}" if lab.get("unit") else "")}
        flag = _FLAG.get(lab.get("flag") or "")
        out.append(strip_empty({
            "resourceType": "Observation", "id": f"{e.id}-lab{i}", **base,
            "category": [_category("observation-category", "laboratory", "Laboratory")],
            "code": {"coding": [_coding(LOINC, *known)] if known else None, "text": lab.get("test")},
            **result,
            "interpretation": [{"coding": [_coding(INTERPRETATION, *flag)]}] if flag else None,
        }))
    return [strip_empty(o) for o in out]


def allergies(e: encounters.Encounter) -> list[dict[str, Any]]:
    out = []
    for i, a in enumerate(e.allergies):
        reaction = {"manifestation": [{"text": a.get("reaction") or "Reaction not recorded"}],
                    "severity": a.get("severity")} if a.get("reaction") or a.get("severity") else None
        out.append(strip_empty({
            "resourceType": "AllergyIntolerance", "id": f"{e.id}-al{i}", "meta": _meta(e),
            "clinicalStatus": _status("allergyintolerance-clinical", "active"),
            "verificationStatus": _status("allergyintolerance-verification", "confirmed"),
            "criticality": "high" if a.get("severity") == "severe" else "low",
            "code": {"text": a.get("substance")},
            "patient": ref("Patient", e.patient_id), "encounter": ref("Encounter", e.id),
            "recordedDate": instant(e.signed_at), "recorder": ref("Practitioner", e.provider_id),
            "reaction": [reaction] if reaction else None,
        }))
    return out


def medication_statements(e: encounters.Encounter) -> list[dict[str, Any]]:
    # "active" as of dateAsserted: the chart has no way yet to record that a medicine was stopped.
    return [strip_empty({
        "resourceType": "MedicationStatement", "id": f"{e.id}-md{i}", "meta": _meta(e), "status": "active",
        "medicationCodeableConcept": {"text": m.get("name")}, "subject": ref("Patient", e.patient_id),
        "context": ref("Encounter", e.id),
        "dateAsserted": instant(e.signed_at), "informationSource": ref("Practitioner", e.provider_id),
        "dosage": [{"text": " ".join(x for x in (m.get("dose"), m.get("frequency")) if x)}],
    }) for i, m in enumerate(e.medications)]


def recorded(e: encounters.Encounter) -> list[dict[str, Any]]:
    """Everything one encounter recorded, as FHIR resources (the encounter first)."""
    return [encounter(e), *conditions(e), *procedures(e), *observations(e), *allergies(e),
            *medication_statements(e)]


def _patient_of(q: Query, kind: str) -> uuid.UUID:
    patient_id = q.reference("Patient", "patient", "subject")
    if patient_id is None:
        raise Malformed(f"Search {kind} by patient (patient=Patient/<id>): clinical records are found one patient "
                        "at a time.", code="patient-required")
    return patient_id


async def _patient_encounters(ctx: Ctx, q: Query, kind: str) -> list[encounters.Encounter]:
    found, _ = await encounters.find_encounters(ctx.session, ctx.principal, patient_id=_patient_of(q, kind),
                                                limit=10_000)
    return found


async def _derived(ctx: Ctx, rid: str, kind: str, build) -> dict[str, Any]:
    e = await encounters.get_encounter(ctx.session, ctx.principal, parent_id(_DERIVED, rid, kind))
    return pick(build(e), rid, kind)


async def _versions(ctx: Ctx, encounter_id: uuid.UUID, build, rid: str, kind: str) -> list[Version]:
    """The versions of a resource made from one encounter, newest first (those where it exists)."""
    out = []
    for v in reversed(await encounters.versions(ctx.session, ctx.principal, encounter_id)):
        found = next((r for r in build(v.encounter) if r["id"] == rid), None)
        if found is not None:
            out.append(Version(rid, v.version, v.at, "POST" if v.change == "created" else "PUT", found))
    if not out:
        raise no_such(kind, rid)
    return out


def _at_version(versions: list[Version], version: int, kind: str, rid: str) -> dict[str, Any]:
    found = next((v.resource for v in versions if v.version == version), None)
    if found is None:
        raise NotFound(f"{kind}/{rid} has no version {version}.", code="version-not-found")
    return found


_BY_DATE = {"date": lambda r: (r.get("effectiveDateTime") or r.get("performedDateTime") or r.get("recordedDate")
                               or r.get("dateAsserted") or ""),
            "_lastUpdated": lambda r: r["meta"]["lastUpdated"]}


def _codes(res: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    code = res.get("code") or {}
    out = [(c.get("system"), c.get("code")) for c in code.get("coding") or []]
    if code.get("text"):
        out.append((None, code["text"]))
    return out


def _filter_dates(found: list[dict[str, Any]], q: Query, field: str) -> list[dict[str, Any]]:
    for values in q.each("date"):
        bound = date_range(values[0], "date")
        found = [r for r in found if r.get(field)
                 and date_matches(bound, datetime.fromisoformat(r[field].replace("Z", "+00:00")))]
    return found


@resource
class EncounterResource(Resource):
    type = "Encounter"
    search_params = {"_id": "token", "patient": "reference", "subject": "reference", "date": "date",
                     "type": "token", "status": "token"}
    sort_params = ("date",)
    includes = {"patient": ("Patient", "subject"), "practitioner": ("Practitioner", "participant")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return encounter(await encounters.get_encounter(ctx.session, ctx.principal, as_uuid(rid, self.type)))

    async def history(self, ctx: Ctx, rid: str) -> list[Version]:
        ctx.allow(self.type, "r")
        return await _versions(ctx, as_uuid(rid, self.type), lambda e: [encounter(e)], rid, self.type)

    async def vread(self, ctx: Ctx, rid: str, version: int) -> dict[str, Any]:
        return _at_version(await self.history(ctx, rid), version, self.type, rid)

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        patient_id = q.reference("Patient", "patient", "subject")
        types = None
        for values in q.each("type"):
            wanted = [v.split("|")[-1] for v in values]
            types = wanted if types is None else [t for t in types if t in wanted]
        statuses = None
        for values in q.each("status"):
            statuses = values if statuses is None else [v for v in statuses if v in values]
        ids = [i for values in q.each("_id") for i in values]
        if ids or q.last_updated:  # rare: match in memory
            found, _ = await encounters.find_encounters(
                ctx.session, ctx.principal, patient_id=patient_id,
                occurred=[date_range(v[0], "date") for v in q.each("date")], types=types, statuses=statuses,
                limit=10_000)
            return page_in_memory([encounter(e) for e in found if not ids or str(e.id) in ids], q,
                                  {"date": lambda r: r["period"]["start"]})
        found, total = await encounters.find_encounters(
            ctx.session, ctx.principal, patient_id=patient_id,
            occurred=[date_range(v[0], "date") for v in q.each("date")], types=types, statuses=statuses,
            limit=q.count, offset=q.offset, newest_first=not q.sort or q.sort[0][1])
        return Page([encounter(e) for e in found], total)


def _codings(value: Any) -> list[tuple[str | None, str | None]]:
    items = value if isinstance(value, list) else [value] if value else []
    return [(c.get("system"), c.get("code")) for item in items for c in (item or {}).get("coding") or []]


def _by_token(found: list[dict[str, Any]], q: Query, param: str, codes) -> list[dict[str, Any]]:
    for values in q.each(param):
        found = [r for r in found if any(token_matches(v, codes(r)) for v in values)]
    return found


class _Recorded(Resource):
    """A resource type recorded within encounters: read by its derived id, searched one patient
    at a time (their encounters, with the records merged into theirs)."""
    build: ClassVar[Callable[[encounters.Encounter], list[dict[str, Any]]]]
    sort_params = ("date", "_lastUpdated")

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return await _derived(ctx, rid, self.type, type(self).build)

    async def history(self, ctx: Ctx, rid: str) -> list[Version]:
        ctx.allow(self.type, "r")
        return await _versions(ctx, parent_id(_DERIVED, rid, self.type), type(self).build, rid, self.type)

    async def vread(self, ctx: Ctx, rid: str, version: int) -> dict[str, Any]:
        return _at_version(await self.history(ctx, rid), version, self.type, rid)

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        found = [r for e in await _patient_encounters(ctx, q, self.type) for r in type(self).build(e)]
        for values in q.each("encounter"):
            ids = [ref_id(v, "Encounter") for v in values]
            found = [r for r in found if ref_id(r.get("encounter") or r.get("context"), "Encounter") in ids]
        if not q.sort:
            q.sort = [("date", True)]
        return page_in_memory(self.narrow(found, q), q, _BY_DATE)

    def narrow(self, found: list[dict[str, Any]], q: Query) -> list[dict[str, Any]]:
        return found


@resource
class ConditionResource(_Recorded):
    type = "Condition"
    build = staticmethod(conditions)
    search_params = {"patient": "reference", "subject": "reference", "code": "token", "clinical-status": "token",
                     "category": "token", "encounter": "reference"}
    includes = {"patient": ("Patient", "subject"), "encounter": ("Encounter", "encounter")}

    def narrow(self, found, q):
        found = _by_token(found, q, "code", _codes)
        found = _by_token(found, q, "clinical-status", lambda r: _codings(r.get("clinicalStatus")))
        return _by_token(found, q, "category", lambda r: _codings(r.get("category")))


@resource
class ProcedureResource(_Recorded):
    type = "Procedure"
    build = staticmethod(procedures)
    search_params = {"patient": "reference", "subject": "reference", "code": "token", "date": "date",
                     "encounter": "reference"}
    includes = {"patient": ("Patient", "subject"), "encounter": ("Encounter", "encounter")}

    def narrow(self, found, q):
        return _filter_dates(_by_token(found, q, "code", _codes), q, "performedDateTime")


@resource
class ObservationResource(_Recorded):
    type = "Observation"
    build = staticmethod(observations)
    search_params = {"patient": "reference", "subject": "reference", "code": "token", "date": "date",
                     "category": "token", "encounter": "reference"}
    includes = {"patient": ("Patient", "subject"), "encounter": ("Encounter", "encounter")}

    def narrow(self, found, q):
        found = _by_token(found, q, "code", _codes)
        found = _by_token(found, q, "category", lambda r: _codings(r.get("category")))
        return _filter_dates(found, q, "effectiveDateTime")


@resource
class AllergyIntoleranceResource(_Recorded):
    type = "AllergyIntolerance"
    build = staticmethod(allergies)
    search_params = {"patient": "reference", "clinical-status": "token", "criticality": "token",
                     "encounter": "reference"}
    includes = {"patient": ("Patient", "patient"), "encounter": ("Encounter", "encounter")}

    def narrow(self, found, q):
        found = _by_token(found, q, "clinical-status", lambda r: _codings(r.get("clinicalStatus")))
        for values in q.each("criticality"):
            found = [a for a in found if a.get("criticality") in values]
        return found


@resource
class MedicationStatementResource(_Recorded):
    type = "MedicationStatement"
    build = staticmethod(medication_statements)
    search_params = {"patient": "reference", "subject": "reference", "status": "token", "encounter": "reference"}
    includes = {"patient": ("Patient", "subject"), "encounter": ("Encounter", "context")}

    def narrow(self, found, q):
        for values in q.each("status"):
            found = [m for m in found if m["status"] in values]
        return found


@resource
class GroupResource(Resource):
    """A practitioner's panel: the patients they have seen (Group/<practitioner id>), the cohort a
    Group-level $export takes."""
    type = "Group"
    search_params = {"_id": "token", "managing-entity": "reference"}
    versioned = False
    operations = {"export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        provider_id = as_uuid(rid, self.type)
        doctor = await providers.get_provider(ctx.session, ctx.principal, provider_id)
        seen = await encounters.patients_seen_by(ctx.session, ctx.principal, provider_id)
        # The current records only: a merged record's patient is there under the kept one.
        active = await patients.find_patients(ctx.session, ctx.principal, patients.Criteria(ids=seen),
                                              limit=max(1, len(seen)))
        members = sorted(p.id for p in active.patients)
        return strip_empty({
            "resourceType": "Group", "id": rid, "type": "person", "actual": True,
            "name": f"Patients of {doctor.display_name}", "quantity": len(members),
            "managingEntity": ref("Practitioner", provider_id, doctor.display_name),
            "member": [{"entity": ref("Patient", m)} for m in members]})

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        ids = [v for vs in q.each("_id") for v in vs]
        ids += [str(p) for p in [q.reference("Practitioner", "managing-entity")] if p]
        if not ids:
            raise Malformed("Search Group by _id or managing-entity (a practitioner).", code="bad-search-value")
        return page_in_memory([await self.read(ctx, i) for i in dict.fromkeys(ids)], q, {})
