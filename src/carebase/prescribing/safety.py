"""Safety rules, run on every draft and on every physician edit of a prescription.

Each rule looks at the medicines of the prescription against the patient (age, weight, pregnancy,
allergies, conditions, what they already take) and the knowledge base, and raises **flags**:

* ``blocking``: the prescription cannot be approved unless the physician gives an override reason
  (and some cannot be overridden at all: a controlled substance in an assistant's draft);
* ``warning``: shown beside the medicine, needs no reason;
* ``info``: worth knowing.

Emergency red flags in what the patient said are checked separately (``emergency_signs``): they stop
a consultation before any prescription exists.

The rules support a physician's judgement, they do not replace it: a medicine the knowledge base
does not know is flagged as unchecked, never passed silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from carebase.knowledge import service as knowledge
from carebase.knowledge.catalog import SEVERITY_ORDER, Medicine, name_key

FlagSeverity = Literal["blocking", "warning", "info"]
Source = Literal["assistant", "physician"]

# Allergy families: an allergy to one member (or to the family) is an allergy to every member.
ALLERGY_FAMILIES = ("penicillins", "cephalosporins", "carbapenems", "sulfonamides", "macrolides", "fluoroquinolones",
                    "tetracyclines", "aminoglycosides", "nitroimidazoles", "azole-antifungals", "nsaids",
                    "salicylates", "opioids", "local-anaesthetics", "antiepileptics", "iron-preparations")
# Families whose members cross-react less often: flagged, not blocked.
CROSS_SENSITIVE = {
    frozenset({"penicillins", "cephalosporins"}): "penicillin and cephalosporin allergy cross-react in a few per cent",
    frozenset({"penicillins", "carbapenems"}): "penicillin and carbapenem allergy cross-react in about 1 per cent",
    frozenset({"cephalosporins", "carbapenems"}): "beta-lactam allergy may cross-react with carbapenems",
    frozenset({"salicylates", "nsaids"}): "aspirin sensitivity often extends to other NSAIDs",
}
# What patients and clinicians write for an allergy family.
ALLERGY_WORDS = {
    "penicillin": "penicillins", "penicillins": "penicillins", "pcn": "penicillins",
    "cephalosporin": "cephalosporins", "cephalosporins": "cephalosporins",
    "sulfa": "sulfonamides", "sulpha": "sulfonamides", "sulfonamide": "sulfonamides", "sulphonamide": "sulfonamides",
    "sulfonamides": "sulfonamides", "macrolide": "macrolides", "macrolides": "macrolides",
    "quinolone": "fluoroquinolones", "fluoroquinolone": "fluoroquinolones", "fluoroquinolones": "fluoroquinolones",
    "tetracycline": "tetracyclines", "tetracyclines": "tetracyclines", "aminoglycoside": "aminoglycosides",
    "nsaid": "nsaids", "nsaids": "nsaids", "opioid": "opioids", "opioids": "opioids", "opiate": "opioids",
    "opiates": "opioids", "carbapenem": "carbapenems", "azole": "azole-antifungals",
}
# Property groups whose members add up when taken together (beyond each medicine's own list).
GROUP_INTERACTIONS: dict[frozenset[str], tuple[str, str]] = {
    frozenset({"serotonergic"}): ("major", "serotonin syndrome risk: two serotonergic medicines"),
    frozenset({"qt-prolonging"}): ("major", "additive QT prolongation: risk of torsades de pointes"),
    frozenset({"cns-depressants"}): ("major", "additive sedation and respiratory depression"),
    frozenset({"opioids", "benzodiazepines"}): ("major", "opioid with a benzodiazepine: profound sedation, "
                                                         "respiratory depression, death"),
    frozenset({"anticoagulants", "antiplatelets"}): ("major", "anticoagulant with an antiplatelet: bleeding risk"),
    frozenset({"anticoagulants", "nsaids"}): ("major", "anticoagulant with an NSAID: bleeding risk"),
    frozenset({"bleeding-risk"}): ("moderate", "two medicines that raise bleeding risk"),
    frozenset({"potassium-raising"}): ("moderate", "two medicines that raise potassium: hyperkalaemia risk"),
    frozenset({"nephrotoxic"}): ("moderate", "two nephrotoxic medicines: kidney injury risk"),
    frozenset({"hepatotoxic"}): ("moderate", "two hepatotoxic medicines: liver injury risk"),
    frozenset({"ototoxic"}): ("moderate", "two ototoxic medicines: hearing loss risk"),
    frozenset({"hypoglycaemic", "insulins"}): ("moderate", "added hypoglycaemia risk"),
    frozenset({"anticholinergic"}): ("moderate", "additive anticholinergic burden (confusion, retention, falls)"),
}
INTERACTION_FLAG: dict[str, FlagSeverity] = {"contraindicated": "blocking", "major": "blocking",
                                             "moderate": "warning", "minor": "info"}


@dataclass(frozen=True)
class Patient:
    age_years: float | None = None
    weight_kg: float | None = None
    pregnant: bool = False
    breastfeeding: bool = False
    allergies: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    current_medicines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """One medicine of a prescription: the dose is per administration, in the knowledge base's
    unit for it (``unit`` says which; a different unit is converted where it can be)."""
    medicine: str
    dose: float | None = None
    unit: str | None = None
    times_per_day: float | None = None


@dataclass(frozen=True)
class Flag:
    rule: str  # controlled | allergy | cross-sensitivity | interaction | duplicate | dose | pregnancy |
    #            breastfeeding | age | contraindication | unknown
    severity: FlagSeverity
    medicine: str
    reason: str
    other: str | None = None  # the other medicine, for interactions and duplicates
    overridable: bool = True


@dataclass
class Report:
    flags: list[Flag] = field(default_factory=list)

    @property
    def blocking(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "blocking"]

    @property
    def needs_override(self) -> bool:
        return bool(self.blocking)

    @property
    def can_be_approved(self) -> bool:
        """With an override reason, unless a flag may not be overridden at all."""
        return all(f.overridable for f in self.blocking)


_UNIT_FACTOR = {("g", "mg"): 1000, ("mg", "g"): 0.001, ("mg", "mcg"): 1000, ("mcg", "mg"): 0.001}


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", " ", s.casefold()).strip()


def check(items: list[Item], patient: Patient, *, source: Source = "physician") -> Report:
    kb = knowledge.catalog()
    report = Report()
    flags = report.flags
    meds: list[tuple[Item, Medicine | None]] = [(i, kb.medicine(i.medicine)) for i in items]
    current = [(name, kb.medicine(name)) for name in patient.current_medicines]
    for item, med in meds:
        if med is None:
            flags.append(Flag("unknown", "warning", item.medicine,
                              "not in the knowledge base: no safety check could run on it"))
            continue
        name = med.generic
        if med.controlled:
            if source == "assistant":
                flags.append(Flag("controlled", "blocking", name, f"controlled substance (schedule {med.controlled}): "
                                  "never drafted by the assistant; a physician must prescribe it", overridable=False))
            else:
                flags.append(Flag("controlled", "info", name, f"controlled substance (schedule {med.controlled})"))
        flags.extend(_allergy(med, patient))
        flags.extend(_dose(item, med, patient))
        flags.extend(_pregnancy(med, patient))
        flags.extend(_age(med, patient))
        flags.extend(_contraindications(med, patient))
    # Pairs: each new medicine with the ones after it, and with everything already taken.
    known = [(i.medicine, m) for i, m in meds if m is not None]
    for n, (_, a) in enumerate(known):
        for other_name, b in [*known[n + 1:], *current]:
            if b is None:
                continue
            if a.generic == b.generic:
                flags.append(Flag("duplicate", "warning", a.generic, "already taking it" if (other_name, b) in current
                                  else "prescribed twice", other=b.generic))
                continue
            if a.class_group and a.class_group == b.class_group:
                flags.append(Flag("duplicate", "warning", a.generic,
                                  f"duplicate therapy: both are {a.class_group}", other=b.generic))
            found = _interaction(a, b)
            if found:
                severity, effect = found
                flags.append(Flag("interaction", INTERACTION_FLAG[severity], a.generic, f"{severity}: {effect}",
                                  other=b.generic))
    return report


def _families(med: Medicine) -> set[str]:
    return {g for g in med.groups if g in ALLERGY_FAMILIES} | (
        {med.class_group} if med.class_group in ALLERGY_FAMILIES else set())


def _allergy(med: Medicine, patient: Patient) -> list[Flag]:
    kb = knowledge.catalog()
    mine = _families(med)
    out: list[Flag] = []
    for allergy in patient.allergies:
        words = _norm(allergy)
        if not words:
            continue
        allergen = kb.medicine(words)
        families = set(_families(allergen)) if allergen else set()
        families |= {ALLERGY_WORDS[w] for w in words.split() if w in ALLERGY_WORDS}
        if (allergen and allergen.generic == med.generic) or name_key(words) in {name_key(n) for n in med.names}:
            out.append(Flag("allergy", "blocking", med.generic, f"allergic to {allergy}"))
        elif mine & families:
            out.append(Flag("allergy", "blocking", med.generic,
                            f"allergic to {allergy}: same family ({', '.join(sorted(mine & families))})"))
        else:
            for pair, why in CROSS_SENSITIVE.items():
                if any(f in pair for f in families) and any(f in pair for f in mine) and not (families & mine):
                    out.append(Flag("cross-sensitivity", "warning", med.generic, f"allergic to {allergy}: {why}"))
                    break
    return out


def _dose(item: Item, med: Medicine, patient: Patient) -> list[Flag]:
    if item.dose is None:
        return []
    dose = item.dose
    if item.unit and item.unit != med.dose_unit:
        factor = _UNIT_FACTOR.get((item.unit, med.dose_unit))
        if factor is None:
            return [Flag("dose", "warning", med.generic, f"dose given in {item.unit}, the reference is in "
                         f"{med.dose_unit}: not checked")]
        dose *= factor
    unit = med.dose_unit
    child = patient.age_years is not None and patient.age_years < 18
    if child and med.child_dose:
        if patient.weight_kg is None:
            return [Flag("dose", "warning", med.generic, "child's weight needed to check the dose")]
        c, w = med.child_dose, patient.weight_kg
        low, high = c.min_per_kg * w, c.max_per_kg * w
        if c.max_daily is not None:
            high = min(high, c.max_daily)
        daily_cap = min(x for x in (c.max_daily_per_kg * w if c.max_daily_per_kg else None, c.max_daily)
                        if x is not None) if (c.max_daily_per_kg or c.max_daily) else None
        basis = f"{c.min_per_kg:g}–{c.max_per_kg:g} {unit}/kg for {w:g} kg"
    elif child and not med.child_dose:
        return [Flag("dose", "warning", med.generic, "no children's dose in the reference: check before use")]
    elif med.adult_dose:
        a = med.adult_dose
        low, high, daily_cap = a.min, a.max, a.max_daily
        basis = f"adult {a.min:g}–{a.max:g} {unit}"
    else:
        return []
    out = []
    if dose > high * 1.0001:
        out.append(Flag("dose", "blocking", med.generic, f"{dose:g} {unit} per dose is above the range ({basis})"))
    elif dose < low * 0.9999:
        out.append(Flag("dose", "warning", med.generic, f"{dose:g} {unit} per dose is below the range ({basis})"))
    if daily_cap is not None and item.times_per_day and dose * item.times_per_day > daily_cap * 1.0001:
        out.append(Flag("dose", "blocking", med.generic, f"{dose * item.times_per_day:g} {unit} a day is above the "
                        f"daily maximum of {daily_cap:g} {unit}"))
    return out


def _pregnancy(med: Medicine, patient: Patient) -> list[Flag]:
    out = []
    if patient.pregnant:
        note = f" ({med.pregnancy_note})" if med.pregnancy_note else ""
        if med.pregnancy_category == "X":
            out.append(Flag("pregnancy", "blocking", med.generic, f"contraindicated in pregnancy (category X){note}"))
        elif med.pregnancy_category == "D":
            out.append(Flag("pregnancy", "warning", med.generic, f"evidence of fetal risk (category D){note}"))
        elif med.pregnancy_category == "C":
            out.append(Flag("pregnancy", "info", med.generic, f"risk not ruled out in pregnancy (category C){note}"))
    if patient.breastfeeding and any("breastfeeding" in c or "lactation" in c for c in med.contraindications):
        out.append(Flag("breastfeeding", "warning", med.generic, "contraindicated while breastfeeding"))
    return out


def _age(med: Medicine, patient: Patient) -> list[Flag]:
    age = patient.age_years
    if age is None:
        return []
    if med.min_age_years is not None and age < med.min_age_years:
        return [Flag("age", "blocking", med.generic, f"not for patients under {med.min_age_years:g} "
                     f"(patient is {age:g})")]
    if med.max_age_caution_years is not None and age >= med.max_age_caution_years:
        return [Flag("age", "warning", med.generic, f"use with caution from {med.max_age_caution_years:g} "
                     "(Beers criteria: falls, confusion)")]
    return []


def _contraindications(med: Medicine, patient: Patient) -> list[Flag]:
    out = []
    for condition in patient.conditions:
        c = _norm(condition)
        if not c:
            continue
        for contra in med.contraindications:
            # "active peptic ulcer or gastrointestinal bleeding": either alternative is a match.
            alternatives = [_norm(a) for a in re.split(r"\bor\b|[,;]", contra) if _norm(a)]
            if any(k == c or re.search(rf"\b{re.escape(k)}\b", c) for k in alternatives):
                out.append(Flag("contraindication", "blocking", med.generic, f"contraindicated in {contra}"))
                break
            if re.search(rf"\b{re.escape(c)}\b", _norm(contra)):
                out.append(Flag("contraindication", "warning", med.generic,
                                f"contraindicated in {contra}: check whether it applies ({condition})"))
                break
    return out


def _interaction(a: Medicine, b: Medicine) -> tuple[str, str] | None:
    """The most severe known interaction between two medicines, from either one's list or the
    property groups they share."""
    found: list[tuple[str, str]] = []
    for x, y in ((a, b), (b, a)):
        targets = {name_key(n) for n in y.names} | set(y.groups) | ({y.class_group} if y.class_group else set())
        for i in x.interactions:
            if name_key(i.with_) in targets or i.with_.casefold() in targets:
                found.append((i.severity, f"{x.generic} with {y.generic}: {i.effect}"))
    groups_a = set(a.groups) | ({a.class_group} if a.class_group else set())
    groups_b = set(b.groups) | ({b.class_group} if b.class_group else set())
    for key, (severity, effect) in GROUP_INTERACTIONS.items():
        if len(key) == 1:
            (g,) = key
            if g in groups_a and g in groups_b:
                found.append((severity, effect))
        else:
            g1, g2 = sorted(key)
            if (g1 in groups_a and g2 in groups_b) or (g2 in groups_a and g1 in groups_b):
                found.append((severity, effect))
    if not found:
        return None
    return max(found, key=lambda f: SEVERITY_ORDER[f[0]])


# -- emergencies in what the patient says ------------------------------------------------------

@dataclass(frozen=True)
class Emergency:
    sign: str
    advice: str


_NEGATION = re.compile(r"\b(?:no|not|never|without|denies|deny|don'?t have|do not have|isn'?t|wasn'?t|none)\b", re.I)
_CLAUSE = re.compile(r"[.;:!?,]|\b(?:but|and|though|although|however|now|then)\b", re.I)


def _negated(text: str, at: int) -> bool:
    """A negation in the same clause, just before ``at`` ("no chest pain"; not "no fever but
    chest pain"). When in doubt it is not negated: a false alarm costs less than a missed one."""
    clause = _CLAUSE.split(text[max(0, at - 40):at])[-1]
    return bool(_NEGATION.search(clause))


# Each: what to look for (all parts must appear in one message), and what to tell the patient.
EMERGENCY_RULES: list[tuple[str, list[str], str]] = [
    ("chest pain with exertion or radiation",
     [r"chest (?:pain|tightness|pressure|heaviness)|pain in (?:my|the) chest|crushing chest",
      r"exert|walk|climb|stairs|exercise|running|radiat|spread|left arm|jaw|shoulder|sweat|breathless|short of breath"],
     "Possible heart attack. Call emergency services (112 / 911 / 999) now; chew 300 mg aspirin if you are not "
     "allergic to it."),
    ("stroke signs",
     [r"face (?:droop|drooping|is drooping|fell)|drooping face|slurred speech|speech (?:is )?slurred|can'?t speak"
      r"|cannot speak|arm (?:is )?weak|weak(?:ness)? (?:in|of) (?:my|one|the|his|her) (?:arm|leg|side)"
      r"|one side of (?:my|the|his|her) (?:body|face)|sudden(?:ly)? (?:numb|weak|confus|lost vision|blind)"],
     "Possible stroke. Call emergency services now and note the time the signs began."),
    ("severe breathing difficulty",
     [r"can'?t breathe|cannot breathe|unable to breathe|struggling to breathe|gasping|severe(?:ly)? (?:short(?:ness)? "
      r"of breath|breathless)|lips (?:are |turning )?(?:blue|grey)|blue lips|choking"],
     "Severe breathing difficulty. Call emergency services now; sit upright; use your reliever inhaler if you "
     "have one."),
    ("suicidal intent",
     [r"kill myself|end (?:my|it all)|suicid|take my (?:own )?life|don'?t want to (?:live|be alive)"
      r"|want to die|better off dead|overdos|hurt myself|self[- ]harm"],
     "You deserve support right now. If you might act on these thoughts, call emergency services or go to the "
     "nearest emergency department; in India call Tele-MANAS 14416, in the US 988, in the UK 116 123."),
    ("anaphylaxis",
     [r"throat (?:is )?(?:swelling|closing|tight)|swollen (?:tongue|throat|lips)|(?:tongue|lips|face) "
      r"(?:is |are )?swell|anaphyla|hives all over"],
     "Possible anaphylaxis. Use an adrenaline auto-injector if you have one and call emergency services now."),
    ("heavy bleeding",
     [r"(?:heavy|severe|a lot of|lots of|won'?t stop|uncontrolled|profuse) (?:bleeding|blood)|bleeding (?:heavily|"
      r"won'?t stop|a lot|badly)|vomiting blood|coughing (?:up )?blood|blood in (?:my )?vomit|black(?:,)? tarry"],
     "Heavy bleeding. Press firmly on the wound if there is one and call emergency services now."),
    ("loss of consciousness or seizure",
     [r"unconscious|passed out and|not waking|unresponsive|fitting|seizure (?:won'?t stop|lasting|for \d+ min)"
      r"|convuls"],
     "Call emergency services now; lay the person on their side and do not put anything in their mouth."),
    ("severe head injury or worst headache",
     [r"worst headache|thunderclap|sudden severe headache|head injury.*(?:vomit|confus|drows)"],
     "A sudden, severe headache needs emergency care now. Call emergency services."),
]
_COMPILED = [(sign, [re.compile(p, re.I) for p in parts], advice) for sign, parts, advice in EMERGENCY_RULES]


def emergency_signs(text: str) -> list[Emergency]:
    """Emergency red flags in a patient's message (not negated: "no chest pain" is not one)."""
    found = []
    for sign, parts, advice in _COMPILED:
        hits = [p.search(text) for p in parts]
        if all(hits) and not _negated(text, hits[0].start()):
            found.append(Emergency(sign, advice))
    return found
