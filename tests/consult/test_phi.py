"""PHI stripping: what leaves for a model carries tokens, not identifiers; the answer comes back
re-identified; recall on the planted corpus meets the issue's targets."""

from __future__ import annotations

from datetime import date

import pytest

from bench.phi import TARGET_ALL, TARGET_OWN, score
from carebase.consult import phi

ANANYA = phi.Identity(given_name="Ananya", family_name="Iyer", other_names=("Ravi Iyer",),
                      phone="+91 98450 12345", email="ananya.iyer@example.in",
                      address="14 Lavelle Road, Bengaluru 560001", birth_date=date(1988, 3, 14),
                      ids=("MRN-004512", "2345 6789 0123", "WXQ-IN-12345678-9"))


@pytest.mark.parametrize(("text", "gone"), [
    ("Hi, this is Ananya Iyer", ["Ananya", "Iyer"]),
    ("my husband ravi says hello", ["ravi"]),
    ("call me on 9845012345 or +91-98450-12345", ["9845012345", "98450-12345"]),
    ("mail ANANYA.IYER@example.in please", ["ANANYA.IYER@example.in"]),
    ("I live at 14 Lavelle Road near the park", ["14 Lavelle Road"]),
    ("born 14/03/1988", ["14/03/1988"]),
    ("born on March 14, 1988", ["March 14, 1988"]),
    ("my MRN is MRN004512", ["MRN004512"]),
    ("aadhaar 2345-6789-0123", ["2345-6789-0123"]),
])
def test_the_patient_s_own_identifiers_are_found_in_any_spelling(text, gone):
    stripped, mapping = phi.strip(text, ANANYA)
    for piece in gone:
        assert piece not in stripped, stripped
    assert phi.reidentify(stripped, mapping) == text


@pytest.mark.parametrize(("text", "gone"), [
    ("my neighbour Suresh Kumar has the same cough", ["Suresh Kumar"]),
    ("Dr. Meera Nair said to rest", ["Meera Nair"]),
    ("her number is +44 7700 900123", ["7700 900123"]),
    ("write to clinic.desk@hospital.org", ["clinic.desk@hospital.org"]),
    ("appointment on 12/10/2025 at 10", ["12/10/2025"]),
    ("seen on 5th November 2025", ["5th November 2025"]),
    ("policy no. HDF-2231-889", ["HDF-2231-889"]),
    ("SSN 123-45-6789", ["123-45-6789"]),
    ("Flat 3, 45 MG Road, Pune 411001", ["Flat 3", "45 MG Road", "411001"]),
    ("my grandmother is 92 years old", ["92 years old"]),
])
def test_everyone_else_s_identifiers_are_found_by_pattern(text, gone):
    stripped, _ = phi.strip(text)
    for piece in gone:
        assert piece not in stripped, stripped


@pytest.mark.parametrize("text", [
    "headache for 3 days, took paracetamol 500mg twice, BP 130/85, temp 38.5",
    "I am 45 years old and diabetic, metformin 1000 mg daily since 2019",
    "cough since last week, worse at night, 2 puffs of salbutamol every 4 hours",
])
def test_clinical_facts_survive(text):
    stripped, mapping = phi.strip(text)
    assert stripped == text and mapping.tokens == {}


def test_one_identifier_gets_one_token_for_the_whole_consultation():
    first, mapping = phi.strip("I'm Ananya Iyer", ANANYA)
    second, mapping = phi.strip("Ananya Iyer again, call 9845012345", ANANYA, mapping)
    name = first.split()[-1]
    assert name.startswith("[NAME_") and name in second
    assert "[PHONE_1]" in second
    answer = f"Thank you {name}. We will call you at [PHONE_1]."
    assert phi.reidentify(answer, mapping) == "Thank you Ananya Iyer. We will call you at 9845012345."
    again = phi.Mapping.from_json(mapping.to_json())  # stored with the consultation, read back
    assert phi.strip("Ananya Iyer", ANANYA, again)[0] == name


@pytest.mark.parametrize(("born", "bracket"), [
    (date(1988, 3, 14), "30-39"), (date(1988, 11, 22), "30-39"), (date(1988, 11, 23), "30-39"),
    (date(1936, 11, 22), "90+"), (date(1936, 11, 23), "80-89"), (date(2021, 1, 1), "1-9"), (date(2026, 6, 1), "under 1"),
])
def test_age_travels_as_a_bracket(born, bracket):
    assert phi.age_bracket(born, date(2026, 11, 22)) == bracket


def test_recall_on_the_planted_corpus_meets_the_targets():
    s = score()
    assert s.messages >= 200
    missed = "\n".join(f"{k}: {i!r} in {t!r}" for k, i, t in s.missed[:20])
    assert s.recall("own") >= TARGET_OWN, missed
    assert s.recall() >= TARGET_ALL, missed
