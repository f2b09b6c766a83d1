"""What an outside record is searched by, read from the FHIR resource itself: the patient it is
about, its clinical date, its tokens (code, category, status, ...) and the references it makes.

The projector and the searches share these definitions, so what is indexed is what is searched.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

# The elements naming the patient a record is about, by the FHIR search parameter "patient".
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
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


def reference_id(value: Any, kind: str) -> str | None:
    """The id of a ``kind`` reference ({"reference": "Patient/123"} -> "123")."""
    ref = value.get("reference") if isinstance(value, dict) else None
    if isinstance(ref, str) and ref.startswith(kind + "/"):
        return ref[len(kind) + 1:].split("/")[0] or None
    return None


def patient_reference(resource: dict[str, Any]) -> str | None:
    """The id of the Patient the record is about, as the resource names it (or None)."""
    for element in PATIENT_ELEMENTS:
        found = reference_id(resource.get(element), "Patient")
        if found:
            return found
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
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


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
    return sorted(out)


def token_terms(param: str, value: str) -> list[str]:
    """The index terms a token search value matches: 'code=http://loinc.org|8867-4' or 'code=8867-4'."""
    return [f"{param}={value}".lower()]


def references(resource: Any) -> list[str]:
    """Every 'Type/id' reference the resource makes (its own contained ones aside)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and "/" in ref and not ref.startswith("#"):
                parts = ref.split("/")
                found.add("/".join(parts[-2:]) if "_history" not in parts else "/".join(parts[-4:-2]))
            for k, v in value.items():
                if k != "contained":
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(resource)
    return sorted(found)


def as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
