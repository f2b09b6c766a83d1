"""What an outside record is searched by, read from the FHIR resource itself: the patient it is
about, its clinical date, its tokens (code, category, status, ...) and the references it makes.

The projector and the searches share these definitions, so what is indexed is what is searched.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

# The elements naming the patient a record is about, by the FHIR search parameter "patient"
# (a Provenance names what it is the provenance of, the patient among them, in its targets).
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary", "target")
# Types that may stand on their own, about no patient: the directory of other organizations, and
# definitions (a medicine, a device in stock). Every other record must name its patient.
STANDALONE = ("Device", "Location", "Medication", "Organization", "Practitioner", "PractitionerRole")
# A reference's last 'Type/id' (relative, or the end of an absolute URL), its version left aside.
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
# Index terms longer than this are not indexed (a B-tree/GIN key has a size limit); such a token
# is not searchable, the record is still kept.
MAX_TERM = 512
# The clinical date (the "date" search parameter), first found wins: when it happened, not when
# it was written down, where the resource says both.
DATE_ELEMENTS = ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start", "period.start", "onsetDateTime",
                 "onsetPeriod.start", "performedDateTime", "performedPeriod.start", "occurrenceDateTime",
                 "occurrencePeriod.start", "authoredOn", "recordedDate", "dateAsserted", "date", "created",
                 "started", "recorded", "startDate", "billablePeriod.start", "issued")
# Token search parameters and the elements each reads (a code, a Coding, a CodeableConcept, an
# Identifier, or a list of them).
TOKEN_PARAMS = {
    "code": ("code", "medicationCodeableConcept"),
    "vaccine-code": ("vaccineCode",),
    "category": ("category",),
    "status": ("status",),
    "clinical-status": ("clinicalStatus",),
    "verification-status": ("verificationStatus",),
    "type": ("type",),
    "class": ("class",),
    "intent": ("intent",),
    "criticality": ("criticality",),
    "identifier": ("identifier",),
    "specialty": ("specialty",),
}
# The elements that say which encounter a record belongs to.
ENCOUNTER_ELEMENTS = ("encounter", "context")


def _at(resource: dict[str, Any], path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def split_reference(value: Any) -> tuple[str, str] | None:
    """('Patient', '123') from {"reference": "Patient/123"} (or an absolute URL ending so)."""
    ref = value.get("reference") if isinstance(value, dict) else None
    m = _REFERENCE.search(ref) if isinstance(ref, str) else None
    return (m.group(1), m.group(2)) if m else None


def patient_reference(resource: dict[str, Any]) -> str | None:
    """The id of the Patient the record is about, as the resource names it (or None)."""
    for element in PATIENT_ELEMENTS:
        value = resource.get(element)
        for item in value if isinstance(value, list) else [value]:
            found = split_reference(item)
            if found and found[0] == "Patient":
                return found[1]
    return None


def parse_date(value: Any) -> datetime | None:
    """A FHIR date or dateTime as an instant (a partial date is its first moment, in UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or one that falls off the calendar in UTC
        return None


def occurred_at(resource: dict[str, Any]) -> datetime | None:
    for path in DATE_ELEMENTS:
        found = parse_date(_at(resource, path))
        if found is not None:
            return found
    return None


def _codes(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a code, Coding, CodeableConcept or Identifier, or a list of them."""
    if isinstance(value, list):
        return [c for item in value for c in _codes(item)]
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [c for coding in value.get("coding") or [] for c in _codes(coding)]
    code = value.get("code", value.get("value"))
    return [(value.get("system"), code)] if isinstance(code, str) else []


def tokens(resource: dict[str, Any]) -> list[str]:
    out: set[str] = set()
    for param, elements in TOKEN_PARAMS.items():
        for element in elements:
            for system, code in _codes(resource.get(element)):
                out.add(f"{param}={code}".lower())
                out.add(f"{param}={system or ''}|{code}".lower())
    return sorted(t for t in out if len(t) <= MAX_TERM)


def references(resource: Any) -> list[str]:
    """Every 'Type/id' reference the resource makes (its own contained ones aside)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            target = split_reference(value)
            if target:
                found.add("/".join(target))
            for k, v in value.items():
                if k != "contained":
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(resource)
    return sorted(t for t in found if len(t) <= MAX_TERM)


def as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
