"""The safety rules, table-driven: each rule with cases that must flag and cases that must not."""

from __future__ import annotations

import pytest

from carebase.prescribing.safety import Item, Patient, check, emergency_signs

ADULT = Patient(age_years=40, weight_kg=70)


def _flags(items, patient=ADULT, source="physician", rule=None):
    report = check([Item(*i) if isinstance(i, tuple) else Item(i) for i in items], patient, source=source)
    return [f for f in report.flags if rule is None or f.rule == rule]


# (case, items, patient, source, rule, expected severity or None for "no flag of this rule")
CASES = [
    # controlled substances: never from the assistant; a physician may, and is told
    ("controlled, assistant", ["morphine"], ADULT, "assistant", "controlled", "blocking"),
    ("controlled, physician", ["morphine"], ADULT, "physician", "controlled", "info"),
    ("not controlled", ["paracetamol"], ADULT, "assistant", "controlled", None),
    # allergies: the medicine itself, its family, a related family
    ("allergy, same medicine", ["amoxicillin"], Patient(age_years=30, allergies=("amoxicillin",)), "physician",
     "allergy", "blocking"),
    ("allergy, family word", ["amoxicillin"], Patient(age_years=30, allergies=("penicillin",)), "physician",
     "allergy", "blocking"),
    ("allergy, family member", ["ampicillin"], Patient(age_years=30, allergies=("amoxicillin",)), "physician",
     "allergy", "blocking"),
    ("allergy, sulfa", ["sulfamethoxazole/trimethoprim"], Patient(age_years=30, allergies=("sulfa drugs",)),
     "physician", "allergy", "blocking"),
    ("allergy, unrelated", ["azithromycin"], Patient(age_years=30, allergies=("penicillin",)), "physician",
     "allergy", None),
    ("cross-sensitivity", ["cefalexin"], Patient(age_years=30, allergies=("penicillin",)), "physician",
     "cross-sensitivity", "warning"),
    ("no cross-sensitivity", ["azithromycin"], Patient(age_years=30, allergies=("penicillin",)), "physician",
     "cross-sensitivity", None),
    # interactions: from a medicine's own list, or shared property groups; new with current too
    ("interaction, anticoagulant + NSAID", ["ibuprofen"], Patient(age_years=60, current_medicines=("warfarin",)),
     "physician", "interaction", "blocking"),
    ("interaction, serotonergic pair", ["tramadol", "sertraline"], ADULT, "physician", "interaction", "blocking"),
    ("interaction, statin + strong CYP3A4 inhibitor", ["clarithromycin"],
     Patient(age_years=55, current_medicines=("simvastatin",)), "physician", "interaction", "blocking"),
    ("interaction, opioid + benzodiazepine", ["diazepam", "morphine"], ADULT, "physician", "interaction",
     "blocking"),
    ("no interaction", ["paracetamol", "amoxicillin"], ADULT, "physician", "interaction", None),
    # duplicate therapy: one class twice, or the same medicine already taken
    ("duplicate class", ["ibuprofen", "naproxen"], ADULT, "physician", "duplicate", "warning"),
    ("duplicate, already taking", ["omeprazole"], Patient(age_years=50, current_medicines=("omeprazole",)),
     "physician", "duplicate", "warning"),
    ("no duplicate", ["omeprazole", "paracetamol"], ADULT, "physician", "duplicate", None),
    # dose for age and weight
    ("dose above the adult range", [("paracetamol", 2000, "mg", 4)], ADULT, "physician", "dose", "blocking"),
    ("daily dose above the maximum", [("paracetamol", 1000, "mg", 6)], ADULT, "physician", "dose", "blocking"),
    ("dose in range", [("paracetamol", 1000, "mg", 4)], ADULT, "physician", "dose", None),
    ("dose in grams converted", [("paracetamol", 1, "g", 4)], ADULT, "physician", "dose", None),
    ("child dose by weight, too high", [("paracetamol", 500, "mg", 4)], Patient(age_years=4, weight_kg=16),
     "physician", "dose", "blocking"),
    ("child dose by weight, in range", [("paracetamol", 240, "mg", 4)], Patient(age_years=4, weight_kg=16),
     "physician", "dose", None),
    ("child without a weight", [("paracetamol", 240, "mg", 4)], Patient(age_years=4), "physician", "dose",
     "warning"),
    # pregnancy
    ("pregnancy category X", ["isotretinoin"], Patient(age_years=28, pregnant=True), "physician", "pregnancy",
     "blocking"),
    ("not pregnant", ["isotretinoin"], Patient(age_years=28), "physician", "pregnancy", None),
    # age
    ("too young", ["codeine"], Patient(age_years=8, weight_kg=25), "physician", "age", "blocking"),
    ("old enough", ["codeine"], Patient(age_years=30), "physician", "age", None),
    ("Beers caution", ["diazepam"], Patient(age_years=80), "physician", "age", "warning"),
    # contraindications from the patient's conditions
    ("contraindicated condition", ["ibuprofen"], Patient(age_years=40, conditions=("active peptic ulcer",)),
     "physician", "contraindication", "blocking"),
    ("no contraindication", ["paracetamol"], Patient(age_years=40, conditions=("hypertension",)), "physician",
     "contraindication", None),
    # a medicine the knowledge base does not know is never passed silently
    ("unknown medicine", ["unobtainium"], ADULT, "physician", "unknown", "warning"),
]


@pytest.mark.parametrize(("items", "patient", "source", "rule", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rule(items, patient, source, rule, expected):
    flags = _flags(items, patient, source, rule)
    if expected is None:
        assert flags == [], flags
    else:
        assert flags, f"no {rule} flag"
        assert expected in {f.severity for f in flags}, flags
        assert all(f.reason for f in flags)


def test_category_d_in_pregnancy_is_flagged_but_not_blocked():
    from carebase.knowledge import service as knowledge

    d = next(m for m in knowledge.catalog().medicines.values() if m.pregnancy_category == "D")
    flags = _flags([d.generic], Patient(age_years=28, pregnant=True), rule="pregnancy")
    assert [f.severity for f in flags] == ["warning"]


def test_a_blocking_flag_needs_an_override_and_an_assistant_controlled_drug_cannot_have_one():
    report = check([Item("ibuprofen")], Patient(age_years=60, current_medicines=("warfarin",)))
    assert report.needs_override and report.can_be_approved
    report = check([Item("morphine")], ADULT, source="assistant")
    assert report.needs_override and not report.can_be_approved
    report = check([Item("paracetamol", 500, "mg", 4)], ADULT)
    assert not report.needs_override


@pytest.mark.parametrize(("text", "sign"), [
    ("I get chest pain when I climb stairs and it goes to my left arm", "chest pain with exertion or radiation"),
    ("crushing chest pressure and I'm sweating", "chest pain with exertion or radiation"),
    ("my father's face is drooping and his speech is slurred", "stroke signs"),
    ("I can't breathe properly, my lips are turning blue", "severe breathing difficulty"),
    ("honestly I want to end it all", "suicidal intent"),
    ("ate peanuts and now my throat is swelling", "anaphylaxis"),
    ("bleeding heavily from a cut and it won't stop", "heavy bleeding"),
    ("no fever but chest pain when walking uphill", "chest pain with exertion or radiation"),
])
def test_emergencies_are_recognised(text, sign):
    assert sign in [e.sign for e in emergency_signs(text)]
    assert all(e.advice for e in emergency_signs(text))


@pytest.mark.parametrize("text", [
    "mild sore throat and a runny nose for two days",
    "no chest pain, just a cough",
    "I do not have any chest pain when walking",
    "my knee hurts after running",
    "slight bleeding from the gums when brushing",
])
def test_everyday_complaints_are_not_emergencies(text):
    assert emergency_signs(text) == []
