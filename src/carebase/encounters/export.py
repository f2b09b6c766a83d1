"""A patient's whole record, exported: a FHIR R4 Bundle (JSON) and a readable PDF summary.

Both are built from ``service.chart``, so an export follows the chart's rules exactly: the same
permissions (staff of the patient's organization, or the patient through their own door; 404
otherwise) and the same audited read of the patient. Nothing here writes.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from carebase.encounters import service
from carebase.encounters.codes import VITAL_RANGES
from carebase.patients.service import Patient
from carebase.platform.authz import Principal
from carebase.platform.errors import NotFound
from carebase.platform.pdf import PDF_ENCODING, FoldedText
from carebase.providers import service as providers
from carebase.tenants import service as tenants

FHIR_VERSION = "4.0.1"

# Code systems and identifier systems.
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
NPI = "http://hl7.org/fhir/sid/us-npi"
BCP47 = "urn:ietf:bcp:47"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
# Carebase's own identifiers. URNs rather than URLs under the server's address: an identifier
# system must not change when an operator moves the server to another host name.
GLOBAL_ID = "urn:carebase:patient-global-id"
ENCOUNTER_TYPE = "urn:carebase:encounter-type"


def _mrn_system(tenant_id: uuid.UUID) -> str:
    return f"urn:carebase:tenant:{tenant_id}:mrn"  # a medical record number is unique per organization only


GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
SEX_LABEL = {"M": "Male", "F": "Female", "O": "Other", "U": "Unknown"}

TYPE_LABEL = {"office_visit": "Office visit", "telemedicine": "Telemedicine", "emergency": "Emergency",
              "hospital": "Hospital", "lab": "Laboratory", "imaging": "Imaging"}
# Encounter.class (v3 ActCode). Lab and imaging visits are outpatient visits.
ENCOUNTER_CLASS = {"office_visit": ("AMB", "ambulatory"), "telemedicine": ("VR", "virtual"),
                   "emergency": ("EMER", "emergency"), "hospital": ("IMP", "inpatient encounter"),
                   "lab": ("AMB", "ambulatory"), "imaging": ("AMB", "ambulatory")}

# Vital sign -> LOINC code, display, UCUM code; the unit shown to people is codes.VITAL_RANGES'.
VITAL_LOINC: dict[str, tuple[str, str, str]] = {
    "systolic_mmhg": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "diastolic_mmhg": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "heart_rate_bpm": ("8867-4", "Heart rate", "/min"),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min"),
    "temperature_c": ("8310-5", "Body temperature", "Cel"),
    "spo2_percent": ("2708-6", "Oxygen saturation in Arterial blood", "%"),
    "weight_kg": ("29463-7", "Body weight", "kg"),
    "height_cm": ("8302-2", "Body height", "cm"),
}
# The FHIR vital-signs profile asks for the pulse-oximetry code next to 2708-6 (how we measure it).
SPO2_PULSE_OX = ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BMI = ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2")
VITAL_LABEL = {"systolic_mmhg": "Systolic BP", "diastolic_mmhg": "Diastolic BP", "heart_rate_bpm": "Heart rate",
               "respiratory_rate": "Respiratory rate", "temperature_c": "Temperature", "spo2_percent": "SpO2",
               "weight_kg": "Weight", "height_cm": "Height"}
assert set(VITAL_LOINC) == set(VITAL_RANGES), "every recorded vital needs a LOINC code for the export"

INTERPRETATION_CODE = {"normal": ("N", "Normal"), "low": ("L", "Low"), "high": ("H", "High"),
                       "critical": ("AA", "Critical abnormal")}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


# -- gathering ---------------------------------------------------------------------------------


async def _gather(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> dict[str, Any]:
    """The chart (permissions and the audited read happen there), plus who saw the patient and where."""
    chart = await service.chart(session, principal, patient_id)
    seen: dict[uuid.UUID, providers.Provider | None] = {}
    for e in chart["encounters"]:
        if e.provider_id not in seen:
            try:
                seen[e.provider_id] = await providers.get_provider(session, principal, e.provider_id)
            except NotFound:  # the directory has no delete today; if it ever does, the record still exports
                seen[e.provider_id] = None
    return {**chart, "providers": seen, "tenant": await tenants.current_tenant(session, principal)}


def _urn(kind: str, *parts: object) -> str:
    """A stable urn:uuid for an entry: the same record exports with the same references."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"carebase:{kind}:" + ":".join(map(str, parts))))


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> int | float:
    return value if isinstance(value, int) else float(value)


# -- FHIR --------------------------------------------------------------------------------------


def _patient_resource(p: Patient, org_ref: str) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": str(p.id),
                           "active": not (p.erased_at or p.merged_into), "identifier": [],
                           "managingOrganization": {"reference": org_ref}}
    if p.global_id:
        res["identifier"].append({"use": "official", "system": GLOBAL_ID, "value": p.global_id})
    res["identifier"].append({"use": "usual", "system": _mrn_system(p.tenant_id), "value": p.mrn,
                              "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "MR",
                                                   "display": "Medical record number"}]}})
    if p.given_name or p.family_name:
        name: dict[str, Any] = {"use": "official",
                                "text": " ".join(x for x in (p.given_name, p.family_name) if x)}
        if p.family_name:
            name["family"] = p.family_name
        if p.given_name:
            name["given"] = p.given_name.split()
        res["name"] = [name]
    res["gender"] = GENDER.get(p.gender, "unknown")
    if p.birth_date:
        res["birthDate"] = p.birth_date.isoformat()
    telecom = []
    if p.phone:
        telecom.append({"system": "phone", "value": p.phone, "use": "mobile"})
    if p.email:
        telecom.append({"system": "email", "value": p.email})
    if telecom:
        res["telecom"] = telecom
    if p.country:
        res["address"] = [{"country": p.country}]
    if p.preferred_language:
        res["communication"] = [{"language": {"coding": [{"system": BCP47, "code": p.preferred_language}],
                                              "text": p.preferred_language}, "preferred": True}]
    if p.emergency_contact_name or p.emergency_contact_phone:
        contact: dict[str, Any] = {}
        if p.emergency_contact_relationship:
            contact["relationship"] = [{"text": p.emergency_contact_relationship}]
        if p.emergency_contact_name:
            contact["name"] = {"text": p.emergency_contact_name}
        if p.emergency_contact_phone:
            contact["telecom"] = [{"system": "phone", "value": p.emergency_contact_phone}]
        res["contact"] = [contact]
    if not res["identifier"]:
        del res["identifier"]
    return res


def _practitioner_resource(pr: providers.Provider) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Practitioner", "id": str(pr.id), "active": True,
                           "identifier": [{"system": NPI, "value": pr.npi}],
                           "name": [{"use": "official", "text": f"{pr.given_name} {pr.family_name}",
                                     "family": pr.family_name, "given": pr.given_name.split()}]}
    telecom = [{"system": "phone", "value": pr.phone, "use": "work"}] if pr.phone else []
    if pr.email:
        telecom.append({"system": "email", "value": pr.email, "use": "work"})
    if telecom:
        res["telecom"] = telecom
    if pr.languages:
        res["communication"] = [{"coding": [{"system": BCP47, "code": lang}]} for lang in pr.languages]
    return res


def _quantity(value: Any, ucum: str, unit: str) -> dict[str, Any]:
    return {"value": _number(value), "unit": unit, "system": UCUM, "code": ucum}


def _vital_observations(e: service.Encounter, refs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    vitals = e.vitals or {}
    out: list[tuple[str, dict[str, Any]]] = []

    def observation(name: str, code: list[dict[str, str]], **value: Any) -> dict[str, Any]:
        url = _urn("vital", e.id, name)
        res = {"resourceType": "Observation", "id": url.removeprefix("urn:uuid:"), "status": "final",
               "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs",
                                         "display": "Vital Signs"}]}],
               "code": {"coding": code, "text": code[0]["display"]}, **refs, **value}
        out.append((url, res))
        return res

    def coding(code: str, display: str) -> dict[str, str]:
        return {"system": LOINC, "code": code, "display": display}

    # Systolic and diastolic travel together as the blood pressure panel (the FHIR vital-signs profile).
    components = []
    for name in ("systolic_mmhg", "diastolic_mmhg"):
        if name in vitals:
            loinc, display, ucum = VITAL_LOINC[name]
            components.append({"code": {"coding": [coding(loinc, display)], "text": display},
                               "valueQuantity": _quantity(vitals[name], ucum, VITAL_RANGES[name][2])})
    if components:
        observation("blood_pressure", [coding(*BP_PANEL)], component=components)
    measured: dict[str, str] = {}
    for name, value in vitals.items():
        if name in ("systolic_mmhg", "diastolic_mmhg") or name not in VITAL_LOINC:
            continue
        loinc, display, ucum = VITAL_LOINC[name]
        codes = [coding(loinc, display)] + ([coding(*SPO2_PULSE_OX)] if name == "spo2_percent" else [])
        observation(name, codes, valueQuantity=_quantity(value, ucum, VITAL_RANGES[name][2]))
        measured[name] = out[-1][0]
    # BMI is not recorded; it is derived from this visit's weight and height, and says so.
    if vitals.get("weight_kg") and vitals.get("height_cm"):
        bmi = round(vitals["weight_kg"] / (vitals["height_cm"] / 100) ** 2, 1)
        observation("bmi", [coding(*BMI[:2])], valueQuantity={"value": bmi, "unit": "kg/m2", "system": UCUM,
                                                              "code": BMI[2]},
                    derivedFrom=[{"reference": measured["weight_kg"]}, {"reference": measured["height_cm"]}])
    return out


def _lab_value(lab: dict[str, Any]) -> dict[str, Any]:
    raw = str(lab.get("value", ""))
    if _NUMBER.match(raw.strip()):
        quantity: dict[str, Any] = {"value": float(raw) if "." in raw else int(raw)}
        if lab.get("unit"):
            quantity["unit"] = lab["unit"]  # typed by the clinician, not checked against UCUM: shown, not coded
        return {"valueQuantity": quantity}
    return {"valueString": raw + (f" {lab['unit']}" if lab.get("unit") else "")}


async def fhir_bundle(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> dict[str, Any]:
    """The patient's whole record as a FHIR R4 Bundle of type ``collection`` (JSON-ready dict),
    validated against fhir.resources' R4B models. ``patient_id`` None: the caller's own record."""
    data = await _gather(session, principal, patient_id)
    p: Patient = data["patient"]
    tenant = data["tenant"]
    now = _instant(datetime.now(UTC))
    entries: list[dict[str, Any]] = []

    def add(url: str, resource: dict[str, Any]) -> str:
        entries.append({"fullUrl": url, "resource": resource})
        return url

    org_url = f"urn:uuid:{tenant.id}"
    patient_url = f"urn:uuid:{p.id}"
    add(patient_url, _patient_resource(p, org_url))
    add(org_url, {"resourceType": "Organization", "id": str(tenant.id), "active": True, "name": tenant.name})
    practitioner_url: dict[uuid.UUID, str] = {}
    for provider_id, pr in data["providers"].items():
        if pr is not None:
            practitioner_url[provider_id] = add(f"urn:uuid:{pr.id}", _practitioner_resource(pr))
    subject = {"reference": patient_url}

    for e in sorted(data["encounters"], key=lambda x: (x.occurred_at, x.id)):
        encounter_url = f"urn:uuid:{e.id}"
        when = _instant(e.occurred_at)
        performer = practitioner_url.get(e.provider_id)
        act, act_display = ENCOUNTER_CLASS.get(e.type, ("AMB", "ambulatory"))
        encounter: dict[str, Any] = {
            "resourceType": "Encounter", "id": str(e.id), "status": "finished",
            "class": {"system": ACT_CODE, "code": act, "display": act_display},
            "type": [{"coding": [{"system": ENCOUNTER_TYPE, "code": e.type,
                                  "display": TYPE_LABEL.get(e.type, e.type)}],
                      "text": TYPE_LABEL.get(e.type, e.type)}],
            "subject": subject, "period": {"start": when}, "serviceProvider": {"reference": org_url}}
        if performer:
            encounter["participant"] = [{"type": [{"coding": [{"system": PARTICIPATION, "code": "PPRF",
                                                               "display": "primary performer"}]}],
                                         "individual": {"reference": performer}}]
        if e.chief_complaint:
            encounter["reasonCode"] = [{"text": e.chief_complaint}]
        add(encounter_url, encounter)
        refs: dict[str, Any] = {"subject": subject, "encounter": {"reference": encounter_url},
                                "effectiveDateTime": when}
        if performer:
            refs["performer"] = [{"reference": performer}]

        # Diagnoses as they stand now: an amendment replaced the list, the amendments keep the old one.
        diagnoses = []
        for rank, dx in enumerate(e.diagnoses, start=1):
            url = _urn("condition", e.id, rank)
            coding = {"system": ICD10CM, "code": dx["code"]}
            if dx.get("description"):
                coding["display"] = dx["description"]
            condition: dict[str, Any] = {
                "resourceType": "Condition", "id": url.removeprefix("urn:uuid:"),
                "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis",
                                          "display": "Encounter Diagnosis"}]}],
                "code": {"coding": [coding],
                         "text": dx.get("description") or dx["code"]},
                "subject": subject, "encounter": {"reference": encounter_url}, "recordedDate": _instant(e.signed_at)}
            if performer:
                condition["asserter"] = {"reference": performer}
            add(url, condition)
            diagnoses.append({"condition": {"reference": url}, "rank": rank})
        if diagnoses:
            encounter["diagnosis"] = diagnoses
        for i, cpt in enumerate(e.procedures):
            url = _urn("procedure", e.id, i)
            procedure: dict[str, Any] = {
                "resourceType": "Procedure", "id": url.removeprefix("urn:uuid:"), "status": "completed",
                "code": {"coding": [{"system": CPT, "code": cpt}], "text": f"CPT {cpt}"},
                "subject": subject, "encounter": {"reference": encounter_url}, "performedDateTime": when}
            if performer:
                procedure["performer"] = [{"actor": {"reference": performer}}]
            add(url, procedure)
        for url, observation in _vital_observations(e, refs):
            add(url, observation)
        for i, lab in enumerate(e.lab_results):
            url = _urn("lab", e.id, i)
            observation = {"resourceType": "Observation", "id": url.removeprefix("urn:uuid:"), "status": "final",
                           "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory",
                                                     "display": "Laboratory"}]}],
                           "code": {"text": lab["test"]}, **refs, **_lab_value(lab)}
            if lab.get("flag") in INTERPRETATION_CODE:
                code, display = INTERPRETATION_CODE[lab["flag"]]
                observation["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": code,
                                                              "display": display}]}]
            add(url, observation)

    # The patient-level lists, as the chart gathers them (one entry per substance/name, latest wins).
    for a in data["allergies"]:
        url = _urn("allergy", p.id, a["substance"].lower())
        allergy: dict[str, Any] = {
            "resourceType": "AllergyIntolerance", "id": url.removeprefix("urn:uuid:"),
            "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": "active", "display": "Active"}]},
            "code": {"text": a["substance"]}, "patient": subject, "recordedDate": a["last_recorded"]}
        if a.get("reaction") or a.get("severity"):
            reaction: dict[str, Any] = {"manifestation": [{"text": a.get("reaction") or "Reaction not recorded"}]}
            if a.get("severity"):
                reaction["severity"] = a["severity"]
            allergy["reaction"] = [reaction]
        add(url, allergy)
    for m in data["medications"]:
        url = _urn("medication", p.id, m["name"].lower())
        # "active" as of dateAsserted: the chart has no way yet to record that a medicine was stopped.
        statement: dict[str, Any] = {
            "resourceType": "MedicationStatement", "id": url.removeprefix("urn:uuid:"), "status": "active",
            "medicationCodeableConcept": {"text": m["name"]}, "subject": subject,
            "dateAsserted": m["last_recorded"]}
        dosage = " ".join(x for x in (m.get("dose"), m.get("frequency")) if x)
        if dosage:
            statement["dosage"] = [{"text": dosage}]
        add(url, statement)
    for pb in data["problems"]:
        url = _urn("problem", p.id, pb["name"].lower())
        status = "resolved" if pb.get("status") == "resolved" else "active"
        add(url, {"resourceType": "Condition", "id": url.removeprefix("urn:uuid:"),
                  "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": status,
                                                 "display": status.capitalize()}]},
                  "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item",
                                            "display": "Problem List Item"}]}],
                  "code": {"text": pb["name"]}, "subject": subject, "recordedDate": pb["last_recorded"]})

    bundle_entries = _prune(entries)
    # No Bundle.id: this collection is made on request and stored nowhere, so it has no logical id to give.
    bundle = {"resourceType": "Bundle", "meta": {"lastUpdated": now},
              "type": "collection", "timestamp": now, "entry": bundle_entries}
    # CPU work that grows with the record: off the event loop, which serves everyone else meanwhile.
    await asyncio.to_thread(_validate, bundle)
    return bundle


def _prune(value: Any) -> Any:
    """Drops empty strings, lists and objects: FHIR forbids empty elements (a blank dose typed in a
    form would otherwise make the whole export invalid)."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [v for v in map(_prune, value) if v not in ("", [], {}, None)]
    return value


def _validate(bundle: dict[str, Any]) -> None:
    """Refuse to hand out a bundle the R4B models reject: a mapping bug fails loudly, in tests first."""
    # Imported on first use: the models take half a second to load, not worth paying at start.
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)


# -- PDF ---------------------------------------------------------------------------------------

# fpdf2's built-in fonts (Helvetica here) cover only Windows-1252 (Western European letters: é, ñ,
# ü, ß, ø, œ...). A Unicode TrueType font would have to come from the machine (paths differ, CI may
# have none) or from a font package outside the chosen dependencies. So text is folded to
# Windows-1252: letters with marks that do not exist there lose the mark (č -> c, ł -> l), and
# anything else (Devanagari, CJK...) becomes "?". The page then says so, and points to the FHIR
# export, which keeps every character.
def _vital_text(name: str, value: Any) -> str:
    unit = VITAL_RANGES[name][2]
    shown = f"{value:g}" if isinstance(value, float) else str(value)  # 171.0 cm reads as 171 cm
    return f"{shown}%" if unit == "%" else f"{shown} {unit}"


def _vitals_line(vitals: dict[str, Any]) -> str:
    """One visit's vitals in the usual order, blood pressure as systolic/diastolic."""
    parts = []
    if "systolic_mmhg" in vitals and "diastolic_mmhg" in vitals:
        parts.append(f"BP {vitals['systolic_mmhg']}/{vitals['diastolic_mmhg']} mmHg")
    for name, label in VITAL_LABEL.items():
        if name in vitals and not (name in ("systolic_mmhg", "diastolic_mmhg") and parts):
            parts.append(f"{label} {_vital_text(name, vitals[name])}")
    return ", ".join(parts)


def _latest_vitals(series: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(label, value, when) of each vital's latest reading; blood pressure as one reading."""
    latest: dict[str, tuple[Any, str]] = {}
    for row in series:  # oldest first, so later readings win
        for name in VITAL_RANGES:
            if row.get(name) is not None:
                latest[name] = (row[name], row["at"])
    out = []
    if "systolic_mmhg" in latest and "diastolic_mmhg" in latest \
            and latest["systolic_mmhg"][1] == latest["diastolic_mmhg"][1]:
        out.append(("Blood pressure", f"{latest['systolic_mmhg'][0]}/{latest['diastolic_mmhg'][0]} mmHg",
                    latest.pop("systolic_mmhg")[1]))
        latest.pop("diastolic_mmhg")
    for name, (value, at) in latest.items():
        out.append((VITAL_LABEL[name], _vital_text(name, value), at))
    if "weight_kg" in latest and "height_cm" in latest:
        (kg, at_w), (cm, at_h) = latest["weight_kg"], latest["height_cm"]
        out.append(("BMI (calculated)", f"{kg / (cm / 100) ** 2:.1f} kg/m²",
                    max(at_w, at_h, key=datetime.fromisoformat)))
    return out


@dataclass
class RecordPdf:
    content: bytes
    filename: str  # record-<global id>.pdf, for Content-Disposition


async def pdf_document(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> RecordPdf:
    """The PDF summary with the name to download it under. ``patient_id`` None: the caller's own."""
    data = await _gather(session, principal, patient_id)
    content, text = await asyncio.to_thread(_render, data, None)  # CPU work: off the event loop
    if text.lost or text.folded:
        # Rendered again with the notice under the header, where it is read before the record.
        content, _ = await asyncio.to_thread(_render, data, "?" if text.lost else "accents")
    p: Patient = data["patient"]
    return RecordPdf(content, f"record-{p.global_id or p.id}.pdf")


async def pdf_summary(session: AsyncSession, principal: Principal, patient_id: uuid.UUID | None) -> bytes:
    """A readable A4 summary of the patient's record (PDF). ``patient_id`` None: the caller's own."""
    return (await pdf_document(session, principal, patient_id)).content


def _render(data: dict[str, Any], notice: str | None) -> tuple[bytes, FoldedText]:
    # Imported on first use: fpdf2 brings Pillow and fontTools, over a second to load.
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    p: Patient = data["patient"]
    tenant = data["tenant"]
    zone = ZoneInfo(tenant.timezone)
    t = FoldedText()

    def local(at: datetime | str, with_time: bool = True) -> str:
        moment = (datetime.fromisoformat(at) if isinstance(at, str) else at).astimezone(zone)
        return moment.strftime("%d %b %Y %H:%M" if with_time else "%d %b %Y")

    name = " ".join(x for x in (p.given_name, p.family_name) if x) or "(name erased)"
    ident = f"Global ID {p.global_id}" if p.global_id else f"MRN {p.mrn}"

    class Summary(FPDF):
        def footer(self) -> None:
            # Every page names the patient: pages of a printed record get separated.
            self.set_y(-12)
            self.set_font("Helvetica", "", 8)
            self.set_text_color(110)
            self.cell(0, 5, t(f"{name} · {ident} · Confidential health information"), align="L")
            self.set_x(self.l_margin)
            self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")

    pdf = Summary(format="A4", unit="mm")
    pdf.core_fonts_encoding = PDF_ENCODING
    pdf.set_title("Health record summary")
    pdf.set_creator("Carebase")
    pdf.set_margins(18, 16, 18)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()

    def line(text: str, size: float = 10, style: str = "", h: float = 5.2, indent: float = 0) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.set_x(pdf.l_margin + indent)
        pdf.multi_cell(pdf.epw - indent, h, t(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(text: str) -> None:
        if pdf.will_page_break(18):
            pdf.add_page()
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.set_text_color(20, 60, 110)
        pdf.cell(0, 7, t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_draw_color(20, 60, 110)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + pdf.epw, pdf.get_y())
        pdf.set_text_color(0)
        pdf.ln(1.5)

    def bullets(items: list[str], empty: str) -> None:
        if not items:
            line(empty, style="I")
        for item in items:
            line(f"•  {item}", indent=2)

    # Header: where, who, when.
    pdf.set_font("Helvetica", "", 10)
    pdf.set_text_color(90)
    pdf.cell(0, 5, t(tenant.name), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0)
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, t(name), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    born = p.birth_date.strftime("%d %b %Y") if p.birth_date else "not recorded"
    details = [f"Global ID {p.global_id}" if p.global_id else None, f"MRN {p.mrn}", f"Born {born}",
               f"Sex {SEX_LABEL.get(p.gender, 'Unknown')}"]
    line("   ·   ".join(x for x in details if x))
    contact = [p.phone, p.email, f"Language: {p.preferred_language}" if p.preferred_language else None]
    if any(contact):
        line("   ·   ".join(x for x in contact if x))
    if p.emergency_contact_name or p.emergency_contact_phone:
        relation = f" ({p.emergency_contact_relationship})" if p.emergency_contact_relationship else ""
        line(f"Emergency contact: {p.emergency_contact_name or ''}{relation} {p.emergency_contact_phone or ''}")
    pdf.set_text_color(90)
    line(f"Health record summary generated {local(datetime.now(UTC))} ({tenant.timezone}) by Carebase.", size=8.5)
    if notice:
        pdf.set_text_color(160, 0, 0)
        line("Some characters cannot be shown in this PDF's font and were "
             + ('replaced by "?"' if notice == "?" else "shown without their accents")
             + "; the FHIR export of this record keeps the exact text.", size=8.5, style="I")
    pdf.set_text_color(0)

    heading("Allergies")
    bullets([a["substance"] + (f" — {a['reaction']}" if a.get("reaction") else "")
             + (f" ({a['severity']})" if a.get("severity") else "") for a in data["allergies"]],
            "No allergies recorded (which does not mean there are none).")
    heading("Medications")
    bullets([" ".join(x for x in (m["name"], m.get("dose"), m.get("frequency")) if x)
             + f"   (last recorded {local(m['last_recorded'], False)})" for m in data["medications"]],
            "No medications recorded.")
    heading("Problem list")
    bullets([f"{pb['name']} ({pb.get('status') or 'active'})" for pb in data["problems"]], "No problems recorded.")
    heading("Diagnoses")
    bullets([f"{d['code']}  {d.get('description') or ''}   (last recorded {local(d['last_recorded'], False)})"
             for d in data["diagnoses"]], "No diagnoses recorded.")
    heading("Latest vitals")
    bullets([f"{label}: {value}   ({local(at, False)})" for label, value, at in _latest_vitals(data["vitals"])],
            "No vitals recorded.")

    heading(f"Encounters ({len(data['encounters'])}, newest first)")
    if not data["encounters"]:
        line("No encounters recorded.", style="I")
    for e in data["encounters"]:
        if pdf.will_page_break(24):
            pdf.add_page()
        pr = data["providers"].get(e.provider_id)
        who = (pr.display_name + (f", {pr.specialty}" if pr.specialty else "")) if pr else "provider not listed"
        pdf.ln(1.5)
        line(f"{local(e.occurred_at)}  ·  {TYPE_LABEL.get(e.type, e.type)}  ·  {who}", size=10.5, style="B")
        labs = "; ".join(f"{lab['test']} {lab['value']}" + (f" {lab['unit']}" if lab.get("unit") else "")
                         + (f" ({lab['flag']})" if lab.get("flag") else "") for lab in e.lab_results)
        fields = [("Complaint", e.chief_complaint),
                  ("Diagnoses", "; ".join(f"{d['code']} {d.get('description') or ''}".strip() for d in e.diagnoses)),
                  ("Procedures (CPT)", ", ".join(e.procedures)),
                  ("Vitals", _vitals_line(e.vitals or {})),
                  ("Lab results", labs), ("Plan", e.treatment_plan), ("Follow-up", e.follow_up_instructions)]
        for label, value in fields:
            if value:
                line(f"{label}: {value}", indent=4)
        pdf.set_text_color(150, 70, 0)
        for a in e.amendments:
            line(f"Amended {local(a['at'])}: {a['field'].replace('_', ' ')} (was: {_shown(a.get('previous'))}) — "
                 f"{a.get('reason') or 'no reason given'}", size=8.5, indent=4)
        pdf.set_text_color(110)
        line(f"Signed {local(e.signed_at)}", size=8, indent=4)
        pdf.set_text_color(0)
    return bytes(pdf.output()), t


def _shown(previous: Any) -> str:
    """An amendment's previous value, short: codes for a coded list, the text for a text field."""
    if previous is None or previous == []:
        return "empty"
    if isinstance(previous, list):
        return ", ".join(v.get("code", str(v)) if isinstance(v, dict) else str(v) for v in previous)
    text = str(previous)
    return text if len(text) <= 80 else text[:77] + "..."
