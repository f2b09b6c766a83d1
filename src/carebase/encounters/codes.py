"""Clinical code checks: ICD-10-CM against the official tabular list (the ``simple-icd-10-cm``
data), CPT by format, vitals by plausible range."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from carebase.platform.errors import ValidationFailed

CPT = re.compile(r"^\d{4}[0-9FT]$")  # Category I: five digits; II: four + F; III: four + T

# (lowest, highest) a living patient can show; outside is a typo (systolic 400, 60 °C).
VITAL_RANGES: dict[str, tuple[float, float, str]] = {
    "systolic_mmhg": (50, 260, "mmHg"),
    "diastolic_mmhg": (20, 160, "mmHg"),
    "heart_rate_bpm": (20, 250, "beats/min"),
    "respiratory_rate": (4, 80, "breaths/min"),
    "temperature_c": (30, 45, "°C"),
    "spo2_percent": (50, 100, "%"),
    "weight_kg": (0.3, 400, "kg"),
    "height_cm": (20, 260, "cm"),
}


@lru_cache(maxsize=1)
def _icd():
    # Imported on first use: parsing the tabular list takes a few seconds, not worth paying at start.
    import simple_icd_10_cm as cm

    return cm


def icd10cm(code: str) -> dict[str, str]:
    """``{"code": "E11.9", "description": "Type 2 diabetes mellitus without complications"}``, or 422."""
    cm = _icd()
    raw = code.strip().upper()
    if not cm.is_valid_item(raw):
        raise ValidationFailed(f"{code!r} is not an ICD-10-CM code.", code="unknown-icd10cm", icd10cm=code)
    dotted = cm.add_dot(raw) if "." not in raw and len(raw) > 3 else raw
    return {"code": dotted, "description": cm.get_description(raw)}


def cpt(code: str) -> str:
    c = code.strip().upper()
    if not CPT.match(c):
        raise ValidationFailed(f"{code!r} is not a CPT code (five characters: 99213, 3074F, 0042T).",
                               code="bad-cpt", cpt=code)
    return c


def vitals(values: dict[str, Any]) -> dict[str, Any]:
    for name, value in values.items():
        if value is None:
            continue
        low, high, unit = VITAL_RANGES[name]
        if not low <= value <= high:
            raise ValidationFailed(f"{name.replace('_', ' ')} {value} {unit} is outside what a patient can have "
                                   f"({low}–{high} {unit}); check the value and the unit.",
                                   code="implausible-vital", vital=name)
    if (values.get("systolic_mmhg") is not None and values.get("diastolic_mmhg") is not None
            and values["diastolic_mmhg"] >= values["systolic_mmhg"]):
        raise ValidationFailed("The diastolic pressure must be below the systolic.", code="implausible-vital",
                               vital="diastolic_mmhg")
    return {k: v for k, v in values.items() if v is not None}
