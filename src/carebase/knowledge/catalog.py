"""The curated knowledge base, as shipped in ``data/`` (see data/README.md for every field).

Loaded once per process and validated on load: a malformed entry stops the process with the file
and entry named, rather than a safety rule silently missing a contraindication.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DATA = Path(__file__).parent / "data"

# The groups medicines belong to (data/README.md): allergy families, therapeutic classes and the
# properties that add up (qt-prolonging, serotonergic …). A misspelt group would silently match
# nothing, so an unknown one stops the load.
GROUPS = frozenset("""
penicillins cephalosporins carbapenems beta-lactams sulfonamides macrolides fluoroquinolones tetracyclines
aminoglycosides nitroimidazoles azole-antifungals antimalarials antituberculars antiretrovirals antivirals nsaids
salicylates opioids benzodiazepines z-drugs ssris snris tricyclics maois antipsychotics antiepileptics triptans
stimulants ace-inhibitors arbs beta-blockers calcium-channel-blockers thiazides loop-diuretics
potassium-sparing-diuretics nitrates pde5-inhibitors statins anticoagulants antiplatelets antiarrhythmics
cardiac-glycosides ppis h2-blockers antiemetics laxatives corticosteroids sulfonylureas insulins biguanides
dpp4-inhibitors sglt2-inhibitors glp1-agonists thyroid-hormones antithyroid bisphosphonates hormonal-contraceptives
estrogens antihistamines leukotriene-antagonists beta2-agonists inhaled-corticosteroids anticholinergic
antimuscarinic-bronchodilators muscle-relaxants dmards immunosuppressants antigout vitamins minerals
iron-preparations potassium-supplements alpha-blockers 5-alpha-reductase-inhibitors antispasmodics
local-anaesthetics retinoids topical-antifungals topical-antibiotics ophthalmic qt-prolonging serotonergic
cns-depressants potassium-raising nephrotoxic bleeding-risk cyp3a4-strong-inhibitors cyp3a4-inducers hypoglycaemic
ototoxic hepatotoxic
""".split())

Severity = Literal["contraindicated", "major", "moderate", "minor"]
SEVERITY_ORDER = {"contraindicated": 4, "major": 3, "moderate": 2, "minor": 1}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdultDose(_Strict):
    min: float = Field(ge=0)
    max: float = Field(ge=0)
    frequency: str
    max_daily: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AdultDose:
        if self.min > self.max or (self.max_daily is not None and self.max_daily < self.max):
            raise ValueError(f"dose range out of order: {self.min}–{self.max}, max daily {self.max_daily}")
        return self


class ChildDose(_Strict):
    min_per_kg: float = Field(ge=0)
    max_per_kg: float = Field(ge=0)
    frequency: str
    max_daily_per_kg: float | None = Field(default=None, ge=0)
    max_daily: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ChildDose:
        if self.min_per_kg > self.max_per_kg:
            raise ValueError(f"dose per kg out of order: {self.min_per_kg}–{self.max_per_kg}")
        return self


class Interaction(_Strict):
    with_: str = Field(alias="with")
    severity: Severity
    effect: str


class Medicine(_Strict):
    generic: str
    synonyms: tuple[str, ...] = ()
    class_: str = Field(alias="class")
    class_group: str | None = None
    groups: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    strengths: tuple[str, ...] = ()
    dose_unit: Literal["mg", "mcg", "g", "units", "mL", "puffs", "drops", "application"]
    adult_dose: AdultDose | None = None
    child_dose: ChildDose | None = None
    min_age_years: float | None = None
    max_age_caution_years: float | None = None
    contraindications: tuple[str, ...] = ()
    pregnancy_category: Literal["A", "B", "C", "D", "X", "N"]
    pregnancy_note: str | None = None
    controlled: Literal["CII", "CIII", "CIV", "CV"] | None = None
    otc: bool = False
    interactions: tuple[Interaction, ...] = ()
    sources: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_groups(self) -> Medicine:
        unknown = {*self.groups, *([self.class_group] if self.class_group else [])} - GROUPS
        if unknown:
            raise ValueError(f"unknown group(s) {sorted(unknown)}: use data/README.md's list")
        return self

    @property
    def names(self) -> set[str]:
        return {self.generic, *self.synonyms}


class RedFlag(_Strict):
    sign: str
    urgency: Literal["emergency", "urgent"]
    advice: str


class FirstLine(_Strict):
    generic: str
    adult: str | None = None
    child: str | None = None
    note: str | None = None


class Condition(_Strict):
    code: str
    name: str
    synonyms: tuple[str, ...] = ()
    symptoms: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()
    red_flags: tuple[RedFlag, ...] = ()
    first_line: tuple[FirstLine, ...] = ()
    self_care: tuple[str, ...] = ()
    refer_when: tuple[str, ...] = ()
    sources: tuple[str, ...] = Field(min_length=1)


def name_key(name: str) -> str:
    """How a medicine name is looked up: case, spacing and the combination separators people use
    ("co-amoxiclav", "sulfamethoxazole/trimethoprim", "artemether + lumefantrine") do not matter."""
    return re.sub(r"[\s/+,&-]+", " ", name.casefold()).strip()


class Catalog:
    def __init__(self, medicines: list[Medicine], conditions: list[Condition]):
        self.medicines = {m.generic: m for m in medicines}
        self.conditions = conditions
        # Every name a prescriber may type (generic or synonym, lowercase) → the generic.
        self.by_name: dict[str, str] = {}
        for m in medicines:
            for name in m.names:
                self.by_name.setdefault(name_key(name), m.generic)
        self.group_members: dict[str, set[str]] = {}
        for m in medicines:
            for g in {*m.groups, *([m.class_group] if m.class_group else [])}:
                self.group_members.setdefault(g, set()).add(m.generic)

    def medicine(self, name: str) -> Medicine | None:
        generic = self.by_name.get(name_key(name))
        return self.medicines.get(generic) if generic else None


def _load(kind: str, model: type[BaseModel]) -> list:
    out = []
    for path in sorted((DATA / kind).glob("*.json")):
        for i, entry in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            try:
                out.append(model.model_validate(entry))
            except ValueError as exc:
                raise ValueError(f"{path.name} entry {i} ({entry.get('generic') or entry.get('name')}): {exc}") from None
    return out


@functools.cache
def catalog() -> Catalog:
    medicines: list[Medicine] = _load("medicines", Medicine)
    seen: dict[str, str] = {}
    unique = []
    for m in medicines:
        if m.generic in seen:  # two files wrote the same medicine: the first (by file name) stands
            continue
        seen[m.generic] = m.generic
        unique.append(m)
    return Catalog(unique, _load("conditions", Condition))


@functools.cache
def digest() -> str:
    """sha-256 of every shipped file: the knowledge base's version."""
    h = hashlib.sha256()
    for path in sorted(DATA.rglob("*.json")):
        h.update(path.relative_to(DATA).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()
