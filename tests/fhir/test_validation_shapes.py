"""Validation by shape (fhir/shapes.py) gives fhir.resources' own verdict, only faster.

The official R4 examples, one of each resource type, are validated once (which teaches the shape);
then copies of each with some values changed (same shape, values good or bad for their elements)
must get exactly the verdict of the full model validation, and the fast path must be what
accepted a good share of them (otherwise it would be proving nothing)."""

from __future__ import annotations

import copy
import json
import random
import uuid
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from carebase.fhir import shapes
from carebase.fhir.base import validate
from carebase.platform.errors import ValidationFailed

EXAMPLES = Path(__file__).resolve().parents[2] / "node_modules" / "hl7.fhir.r4.examples"
# Values that are valid for some FHIR primitive types and not for others.
STRINGS = ["", " ", "x", " lead", "trail ", "a  b", "2020-13-45", "2020-02-29", "2021-02-29", "urn:oid:1.2",
           "not a uri", "http://example.org/a", "A-1.b", "x" * 70, "\t", "1985-03-14T10:00:00Z",
           "1985-03-14T10:00:00", "10:61:00", "12:30:00", "+1", "-3", "0", "true", "a\u0000b"]


def _one_example_per_type() -> list[dict]:
    seen: dict[str, dict] = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        try:
            res = json.loads(path.read_text())
            kind = res["resourceType"]
            get_fhir_model_class(kind)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        seen.setdefault(kind, res)
    return list(seen.values())


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "resourceType":
                yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    elif obj is not None:
        yield path, obj


def _changed(value, rnd: random.Random):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rnd.choice([0, -1, 7, 2**31, 2**40])
    if isinstance(value, float):
        return rnd.choice([0.5, 3.0, -1e300])
    return rnd.choice(STRINGS)


def _full_verdict(resource: dict) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except ValueError:
        return False
    return True


def _our_verdict(resource: dict) -> bool:
    try:
        validate(resource)
    except ValidationFailed:
        return False
    return True


def test_same_verdict_as_the_full_model_validation_for_changed_values():
    examples = _one_example_per_type()
    assert len(examples) > 100, f"hl7.fhir.r4.examples is not installed under {EXAMPLES}"
    rnd = random.Random(2026)
    tried = fast = 0
    for example in examples:
        _our_verdict(example)  # teaches its shape when valid
        leaves = list(_leaves(example))
        for _ in range(6 if leaves else 0):
            changed = copy.deepcopy(example)
            for path, value in rnd.sample(leaves, min(len(leaves), rnd.choice([1, 1, 2, 5]))):
                target = changed
                for p in path[:-1]:
                    target = target[p]
                target[path[-1]] = _changed(value, rnd)
            accepted_fast = shapes.known_valid(changed)
            full = _full_verdict(changed)
            assert not (accepted_fast and not full), f"{example['resourceType']}: the fast path accepted {changed}"
            assert _our_verdict(changed) == full, example["resourceType"]
            tried += 1
            fast += accepted_fast
    assert fast > tried / 4, f"the fast path accepted only {fast} of {tried}"


def _patient(family: str, **extra) -> dict:
    return {"resourceType": "Patient", "id": uuid.uuid4().hex, "name": [{"family": family, "given": ["Ada"]}],
            "gender": "female", "birthDate": "1985-03-14", **extra}


def test_a_bad_value_in_a_known_shape_is_refused_with_the_models_message():
    validate(_patient("Lovelace"))
    assert shapes.known_valid(_patient("Hopper"))  # same shape, new values: no model validation
    with pytest.raises(ValidationFailed) as bad_date:
        validate(_patient("Hopper", birthDate="1985-02-30"))
    assert "birthDate" in bad_date.value.detail
    with pytest.raises(ValidationFailed) as bad_code:
        validate(_patient("Hopper", gender="fe  male"))
    assert "gender" in bad_code.value.detail
    with pytest.raises(ValidationFailed):
        validate(_patient(""))  # FHIR strings are never empty


def test_a_value_of_another_json_type_is_another_shape():
    validate(_patient("Lovelace", active=True))
    for other in ("yes", "maybe", 1, 2, 1.0, [True], {"value": True}):
        changed = _patient("Lovelace", active=other)
        assert not shapes.known_valid(changed)  # not the shape that was learned with a boolean
        assert _our_verdict(changed) == _full_verdict(changed), other
    with pytest.raises(ValidationFailed):
        validate(_patient("Lovelace", unknown="x"))  # an element FHIR does not have
