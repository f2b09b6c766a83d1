"""Validation with ``fhir.resources`` at a fraction of its cost, with the same verdicts.

``fhir.resources`` checks a resource in two kinds of ways: its *shape* (which elements are present,
nested how, repeated how, null or not, which choice of ``value[x]``, no unknown element) and each
primitive *value* against its FHIR type (``id``, ``code``, ``date``, ``uri``...: patterns and
ranges). Nothing in the R4B models looks at two values together. So two resources with the same
shape, whose values each pass their element's type, get the same verdict.

The first resource of each shape goes through the full model validation; if it passes, the shape
is remembered with the primitive type of every value in it, taken from the validated model
instance (so ``contained`` and ``Bundle.entry.resource`` resolve to their concrete types). A later
resource of that shape is valid when each of its values passes its type's own validator (the same
pydantic ``Annotated`` type the model declares). A value that fails, or a shape never seen, goes
the full way, so a refusal always carries the model's own message.

Why: a search page of 50 Patients never seen before cost 7 ms of validation (140 µs each), the
largest part of a FHIR search; a Synthea import spent half its time here.
"""

from __future__ import annotations

import types
import typing
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter

# Bounds on memory. A shape costs about 12 bytes per item of its key (a Patient's has ~120); a large
# resource (a Claim with hundreds of items) rarely repeats its shape exactly, so it is not kept.
# A primitive type's remembered values are forgotten all at once when there are too many (the
# common ones come back with the next page).
_MAX_SHAPES = 2_000
_MAX_SHAPE_ITEMS = 1_000
_MAX_KNOWN_VALUES = 20_000

Check = tuple[Callable[[Any], Any], set]  # a primitive type's validator, and the values it passed

# A shape: the nested keys with each value replaced by its Python type (the resourceType kept,
# since it picks the model) -> the check of each value, in walk order; None when some element
# could not be resolved (that shape always takes the full validation).
_SHAPES: OrderedDict[tuple, list[Check] | None] = OrderedDict()
# One check per primitive type, shared by every shape. The values are kept as (Python type,
# value) pairs because True == 1 == 1.0. Most values repeat (systems, codes, "official").
_CHECKS: dict[Any, Check] = {}


def _walk(value: Any, key: list, leaves: list) -> None:
    if isinstance(value, dict):
        key.append(dict)
        for k, v in value.items():
            key.append(k)
            if k == "resourceType" and isinstance(v, str):
                key.append(v)
            else:
                _walk(v, key, leaves)
        key.append(None)
    elif isinstance(value, list):
        key.append(list)
        for v in value:
            _walk(v, key, leaves)
        key.append(None)
    else:
        key.append(type(value))
        if value is not None:
            leaves.append(value)


def shape(resource: dict[str, Any]) -> tuple[tuple, list]:
    key: list = []
    leaves: list = []
    _walk(resource, key, leaves)
    return tuple(key), leaves


def known_valid(resource: dict[str, Any]) -> bool:
    """True when the resource has a shape that passed the full validation before and every value
    in it passes its element's type; False means: validate it the full way."""
    key, leaves = shape(resource)
    checks = _SHAPES.get(key)
    if checks is None:
        return False
    for value, (check, known) in zip(leaves, checks, strict=True):
        seen = (value.__class__, value)
        if seen in known:
            continue
        try:
            check(value)
        except Exception:  # noqa: BLE001 - any failure: the full validation decides, with its message
            return False
        if len(known) > _MAX_KNOWN_VALUES:
            known.clear()
        known.add(seen)
    return True


def remember(resource: dict[str, Any], instance: BaseModel) -> None:
    """Keep the shape of a resource that just passed the full validation as ``instance``."""
    key, leaves = shape(resource)
    if key in _SHAPES or len(key) > _MAX_SHAPE_ITEMS:
        return
    checks: list[Check] = []
    try:
        _types(resource, instance, checks)
        if len(checks) != len(leaves):
            raise LookupError("a value without its element")
    except (LookupError, TypeError, AttributeError):
        _SHAPES[key] = None
    else:
        _SHAPES[key] = checks
    if len(_SHAPES) > _MAX_SHAPES:
        _SHAPES.popitem(last=False)


def _fields(cls: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """JSON name -> (attribute, annotation) of a model."""
    found = _FIELDS.get(cls)
    if found is None:
        found = {}
        for name, f in cls.model_fields.items():
            found[f.alias or name] = (name, f.annotation)
            found.setdefault(name, (name, f.annotation))
        _FIELDS[cls] = found
    return found


_FIELDS: dict[type, dict[str, tuple[str, Any]]] = {}


def _types(data: dict[str, Any], instance: BaseModel, out: list[Check]) -> None:
    fields = _fields(type(instance))
    for k, v in data.items():
        if k == "resourceType" and isinstance(v, str):
            continue
        name, annotation = fields[k]
        _value_types(v, getattr(instance, name), annotation, out)


def _value_types(value: Any, parsed: Any, annotation: Any, out: list[Check]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        if not isinstance(parsed, BaseModel):
            raise LookupError("an object that is not an element")
        _types(value, parsed, out)
    elif isinstance(value, list):
        if not isinstance(parsed, list) or len(parsed) != len(value):
            raise LookupError("a list that is not a repeating element")
        item = _item(annotation)
        for v, p in zip(value, parsed, strict=True):
            _value_types(v, p, item, out)
    else:
        out.append(_check(_single(annotation)))


def _without_none(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _item(annotation: Any) -> Any:
    lists = [a for a in _without_none(annotation) if typing.get_origin(a) in (list, typing.List)]  # noqa: UP006
    if len(lists) != 1:
        raise LookupError("a list where the element does not repeat")
    return typing.get_args(lists[0])[0]


def _single(annotation: Any) -> Any:
    # A primitive value at an element declared as "one value, or a list of them" (fhir_comments)
    # takes the non-list choice.
    options = [a for a in _without_none(annotation) if typing.get_origin(a) not in (list, typing.List)]  # noqa: UP006
    if len(options) != 1:
        raise LookupError("no single primitive type")
    return options[0]


def _check(annotation: Any) -> Check:
    try:
        check = _CHECKS.get(annotation)
    except TypeError:  # an unhashable annotation
        raise LookupError("an annotation that cannot be cached") from None
    if check is None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            raise LookupError("a primitive value where an element is declared")
        check = _CHECKS[annotation] = (TypeAdapter(annotation).validate_python, set())
    return check
