"""A patient's whole record as a readable PDF summary (the same record as FHIR is the FHIR
facade's: carebase.fhir.everything).

It is built from ``service.chart``, so it follows the chart's rules exactly: the same
permissions (staff of the patient's organization, or the patient through their own door; 404
otherwise) and the same audited read of the patient. Nothing here writes.
"""

from __future__ import annotations

import asyncio
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

SEX_LABEL = {"M": "Male", "F": "Female", "O": "Other", "U": "Unknown"}

VITAL_LABEL = {"systolic_mmhg": "Systolic BP", "diastolic_mmhg": "Diastolic BP", "heart_rate_bpm": "Heart rate",
               "respiratory_rate": "Respiratory rate", "temperature_c": "Temperature", "spo2_percent": "SpO2",
               "weight_kg": "Weight", "height_cm": "Height"}


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
        line(f"{local(e.occurred_at)}  ·  {service.TYPE_LABELS.get(e.type, e.type)}  ·  {who}", size=10.5, style="B")
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
