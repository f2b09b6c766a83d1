"""Prescribing, for the other domains: the safety rules (``safety.py``) and emergency red flags.

Prescriptions themselves (drafts, the physician queue, signing) arrive with the rest of issue 6."""

from __future__ import annotations

from carebase.prescribing.safety import Emergency, Item, Patient, Report, Source, check
from carebase.prescribing.safety import emergency_signs as _emergency_signs


def emergency_signs(text: str) -> list[Emergency]:
    """Emergency red flags in what a patient wrote (stroke signs, chest pain on exertion, …)."""
    return _emergency_signs(text)


def check_prescription(items: list[Item], patient: Patient, *, source: Source = "physician") -> Report:
    """Every safety rule on a prescription's medicines for this patient."""
    return check(items, patient, source=source)
