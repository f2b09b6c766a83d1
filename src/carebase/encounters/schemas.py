"""Request and response models of the encounters and chart API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from carebase.platform.fields import Strict

EncounterType = Literal["office_visit", "telemedicine", "emergency", "hospital", "lab", "imaging"]
Text = str


class Vitals(Strict):
    systolic_mmhg: int | None = None
    diastolic_mmhg: int | None = None
    heart_rate_bpm: int | None = None
    respiratory_rate: int | None = None
    temperature_c: float | None = None
    spo2_percent: int | None = None
    weight_kg: float | None = None
    height_cm: float | None = None


class Allergy(Strict):
    substance: str = Field(min_length=1, max_length=200)
    reaction: str | None = Field(default=None, max_length=200)
    severity: Literal["mild", "moderate", "severe"] | None = None


class Problem(Strict):
    name: str = Field(min_length=1, max_length=200)
    status: Literal["active", "resolved"] = "active"


class Medication(Strict):
    name: str = Field(min_length=1, max_length=200)
    dose: str | None = Field(default=None, max_length=100)
    frequency: str | None = Field(default=None, max_length=100)


class LabResult(Strict):
    test: str = Field(min_length=1, max_length=200)
    value: str = Field(min_length=1, max_length=100)
    unit: str | None = Field(default=None, max_length=40)
    flag: Literal["normal", "low", "high", "critical"] | None = None


class EncounterIn(Strict):
    type: EncounterType = "office_visit"
    occurred_at: datetime | None = Field(default=None, description="Default: now")
    provider_id: uuid.UUID | None = Field(default=None, description="Default: the provider linked to your login")
    appointment_id: uuid.UUID | None = None
    chief_complaint: str | None = Field(default=None, max_length=2000)
    diagnoses: list[str] = Field(default_factory=list, max_length=30, description="ICD-10-CM codes, e.g. E11.9")
    procedures: list[str] = Field(default_factory=list, max_length=30, description="CPT codes, e.g. 99213")
    vitals: Vitals = Field(default_factory=Vitals)
    allergies: list[Allergy] = Field(default_factory=list, max_length=50)
    problems: list[Problem] = Field(default_factory=list, max_length=50)
    medications: list[Medication] = Field(default_factory=list, max_length=50)
    lab_results: list[LabResult] = Field(default_factory=list, max_length=100)
    treatment_plan: str | None = Field(default=None, max_length=10000)
    follow_up_instructions: str | None = Field(default=None, max_length=5000)
    note: str | None = Field(default=None, max_length=20000)


class AmendmentIn(Strict):
    field: Literal["chief_complaint", "treatment_plan", "follow_up_instructions", "note", "diagnoses", "procedures"]
    value: str | list[str] | None
    reason: str = Field(min_length=3, max_length=1000)


class EncounterOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    appointment_id: uuid.UUID | None
    type: str
    occurred_at: datetime
    chief_complaint: str | None
    diagnoses: list[dict[str, Any]]
    procedures: list[str]
    vitals: dict[str, Any]
    allergies: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    medications: list[dict[str, Any]]
    lab_results: list[dict[str, Any]]
    treatment_plan: str | None
    follow_up_instructions: str | None
    note: str | None
    signed_by: uuid.UUID
    signed_at: datetime
    amendments: list[dict[str, Any]]
    status: str = Field(description="finished, or in-progress for a stay admitted from an ADT feed until discharge")
    ended_at: datetime | None = None
    visit_number: str | None = Field(default=None, description="The admitting system's visit number (HL7 PV1-19)")
    version: int


class ChartOut(BaseModel):
    patient_id: uuid.UUID
    encounters: list[EncounterOut]
    diagnoses: list[dict[str, Any]]
    allergies: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    medications: list[dict[str, Any]]
    vitals: list[dict[str, Any]]
