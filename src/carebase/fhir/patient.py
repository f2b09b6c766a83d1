"""Patient: the register, read and written through the patients service (audited, versioned by
its event stream, so vread and history come from the event store)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from carebase.fhir.base import (
    SID,
    Ctx,
    Page,
    Query,
    Resource,
    Version,
    as_date_bound,
    as_uuid,
    date_range,
    invalid,
    meta,
    ref,
    resource,
    strip_empty,
    token,
    validate,
)
from carebase.patients import service as patients
from carebase.platform.errors import Gone, Malformed, NotFound

GLOBAL_ID = SID + "patient-global-id"


def mrn_system(tenant_id: uuid.UUID) -> str:
    return f"{SID}tenant:{tenant_id}:mrn"  # a medical record number is unique per organization only

_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
_GENDER_IN = {v: k for k, v in _GENDER.items()}


def to_fhir(p: patients.Patient) -> dict[str, Any]:
    # Built without empty elements in the first place (no strip_empty): the hot path of every
    # patient search.
    if p.erased_at is not None:
        raise Gone("This patient's data was erased.", code="patient-erased")
    identifiers = [{"use": "official", "system": GLOBAL_ID, "value": p.global_id}] if p.global_id else []
    identifiers.append({"use": "usual", "system": mrn_system(p.tenant_id), "value": p.mrn, "type": _MR})
    name: dict[str, Any] = {"use": "official"}
    text = " ".join(x for x in (p.given_name, p.family_name) if x)
    if text:
        name["text"] = text
    if p.family_name:
        name["family"] = p.family_name
    if p.given_name and p.given_name.split():
        name["given"] = p.given_name.split()
    out: dict[str, Any] = {"resourceType": "Patient", "id": str(p.id), "meta": meta(p.version, p.updated_at),
                           "identifier": identifiers, "active": p.merged_into is None, "name": [name]}
    telecom = []
    if p.phone:
        telecom.append({"system": "phone", "value": p.phone, "use": "mobile"})
    if p.email:
        telecom.append({"system": "email", "value": p.email})
    if telecom:
        out["telecom"] = telecom
    out["gender"] = _GENDER.get(p.gender, "unknown")
    if p.birth_date:
        out["birthDate"] = p.birth_date.isoformat()
    if p.country:
        out["address"] = [{"country": p.country}]
    if p.preferred_language:
        out["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": p.preferred_language}],
                                              "text": p.preferred_language}, "preferred": True}]
    if p.emergency_contact_name or p.emergency_contact_phone:
        out["contact"] = [strip_empty({
            "relationship": [{"text": p.emergency_contact_relationship}] if p.emergency_contact_relationship else None,
            "name": {"text": p.emergency_contact_name} if p.emergency_contact_name else None,
            "telecom": [{"system": "phone", "value": p.emergency_contact_phone}] if p.emergency_contact_phone else None,
        })]
    out["managingOrganization"] = ref("Organization", p.tenant_id)
    if p.merged_into:
        out["link"] = [{"other": ref("Patient", p.merged_into), "type": "replaced-by"}]
    return out


_MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                   "display": "Medical record number"}]}


def _first(items: list[dict] | None, **match: Any) -> dict | None:
    for item in items or []:
        if all(item.get(k) == v for k, v in match.items()):
            return item
    return None


def from_fhir(body: dict[str, Any], tenant_id: uuid.UUID) -> dict[str, Any]:
    """The register's fields from a Patient resource (what Carebase keeps of it)."""
    validate(body)
    names = body.get("name") or []
    name = _first(names, use="official") or (names[0] if names else None)
    if not name or not name.get("family") or not (name.get("given") or name.get("text")):
        raise invalid("Patient.name needs a family name and a given name.", "Patient.name")
    given = " ".join(name.get("given") or []) or name["text"].replace(name["family"], "").strip() or name["text"]
    raw_birth = body.get("birthDate")
    if not raw_birth or len(raw_birth) != 10:
        raise invalid("Patient.birthDate must be a full date (YYYY-MM-DD).", "Patient.birthDate")
    if body.get("gender") not in (None, *_GENDER_IN):
        raise invalid("Patient.gender is one of male, female, other, unknown.", "Patient.gender")
    telecom = body.get("telecom") or []
    phone, email = _first(telecom, system="phone"), _first(telecom, system="email")
    address = (body.get("address") or [{}])[0]
    country = address.get("country")
    language = None
    for comm in body.get("communication") or []:
        codes = (comm.get("language") or {}).get("coding") or []
        if codes and codes[0].get("code"):
            language = codes[0]["code"][:16]
            break
    contact = (body.get("contact") or [None])[0]
    emergency = None
    if contact:
        cname = contact.get("name") or {}
        rel = (contact.get("relationship") or [{}])[0]
        emergency = {
            "name": (cname.get("text") or " ".join([*(cname.get("given") or []), cname.get("family") or ""]).strip()
                     or None),
            "relationship": (rel.get("text") or ((rel.get("coding") or [{}])[0]).get("code")),
            "phone": (_first(contact.get("telecom"), system="phone") or {}).get("value"),
        }
    # Only this organization's own record number is kept; another system's identifiers are not ours.
    mrn = next((i.get("value") for i in body.get("identifier") or [] if i.get("system") == mrn_system(tenant_id)),
               None)
    return {
        "given_name": given[:100], "family_name": name["family"][:100], "birth_date": date.fromisoformat(raw_birth),
        "gender": _GENDER_IN.get(body.get("gender") or "unknown", "U"),
        "phone": phone.get("value") if phone else None, "email": email.get("value") if email else None,
        "country": country.upper() if isinstance(country, str) and len(country) == 2 else None,
        "preferred_language": language, "emergency_contact": emergency, "mrn": mrn,
    }


def _criteria(q: Query, tenant_id: uuid.UUID) -> patients.Criteria:
    c = patients.Criteria()
    for values in q.each("_id"):
        ids = []
        for v in values:
            try:
                ids.append(uuid.UUID(v))
            except ValueError:
                pass
        c.ids = ids if c.ids is None else [i for i in c.ids if i in ids]
    for values in q.each("name"):
        c.names.append(" ".join(values))
    c.families += [v[0] for v in q.each("family")]
    c.givens += [v[0] for v in q.each("given")]
    c.birth_dates += [as_date_bound(date_range(v[0], "birthdate")) for v in q.each("birthdate")]
    for values in q.each("gender"):
        codes = [_GENDER_IN.get(v) for v in values]
        if None in codes:
            raise Malformed("gender is one of male, female, other, unknown.", code="bad-search-value")
        c.genders = codes if c.genders is None else [g for g in c.genders if g in codes]
    for values in q.each("identifier"):
        system, value = token(values[0])
        if system not in (None, "", mrn_system(tenant_id), GLOBAL_ID):
            c.ids = []  # an identifier system Carebase does not keep: nothing matches
        c.identifiers.append(value)
    c.phones += [v[0] for v in q.each("phone")]
    c.emails += [v[0] for v in q.each("email")]
    for values in q.each("telecom"):
        _, value = token(values[0])
        (c.emails if "@" in value else c.phones).append(value)
    c.updated = list(q.last_updated)
    return c


_SORT = {"family": "family", "given": "given", "birthdate": "birthdate", "_lastUpdated": "updated",
         "gender": "gender"}


@resource
class PatientResource(Resource):
    type = "Patient"
    search_params = {"_id": "token", "name": "string", "family": "string", "given": "string",
                     "birthdate": "date", "gender": "token", "identifier": "token", "phone": "token",
                     "email": "token", "telecom": "token"}
    sort_params = tuple(_SORT)
    operations = {"everything": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                  "export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow("Patient", "r")
        return to_fhir(await patients.get_patient(ctx.session, ctx.principal, as_uuid(rid, "Patient")))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow("Patient", "s")
        page = await patients.find_patients(
            ctx.session, ctx.principal, _criteria(q, ctx.principal.tenant_id), sort=[(_SORT[k], d) for k, d in q.sort],
            limit=q.count, offset=q.offset, count=q.count_all)
        return Page([to_fhir(p) for p in page.patients], page.total, page.more)

    async def _versions(self, ctx: Ctx, rid: str) -> list[patients.PatientVersion]:
        ctx.allow("Patient", "r")
        return await patients.versions(ctx.session, ctx.principal, as_uuid(rid, "Patient"))

    async def vread(self, ctx: Ctx, rid: str, version: int) -> dict[str, Any]:
        found = [v for v in await self._versions(ctx, rid) if v.version == version]
        if not found:
            raise NotFound(f"Patient/{rid} has no version {version}.", code="version-not-found")
        if found[0].patient is None:
            raise Gone("This patient's data was erased.", code="patient-erased")
        return to_fhir(found[0].patient)

    async def history(self, ctx: Ctx, rid: str) -> list[Version]:
        return [_version(v, rid) for v in reversed(await self._versions(ctx, rid))]

    async def type_history(self, ctx: Ctx, since: datetime | None, count: int,
                           offset: int) -> tuple[list[Version], int]:
        ctx.allow("Patient", "r")
        found, total = await patients.recent_versions(ctx.session, ctx.principal, since=since, limit=count,
                                                      offset=offset)
        return [_version(v, None) for v in found], total

    async def create(self, ctx: Ctx, body: dict[str, Any]) -> dict[str, Any]:
        ctx.allow("Patient", "c")
        values = from_fhir(body, ctx.principal.tenant_id)
        contact = values.pop("emergency_contact")
        created = await patients.register_patient(ctx.session, ctx.principal, **values, emergency_contact=contact,
                                                  allow_duplicate=True)
        return to_fhir(created)

    async def update(self, ctx: Ctx, rid: str, body: dict[str, Any], expected_version: int | None) -> dict[str, Any]:
        ctx.allow("Patient", "u")
        values = from_fhir(body, ctx.principal.tenant_id)
        values.pop("mrn")  # the record number is the clinic's, not the client's, to change
        contact = values.pop("emergency_contact") or {"name": None, "relationship": None, "phone": None}
        changed = await patients.update_patient(ctx.session, ctx.principal, as_uuid(rid, "Patient"),
                                                expected_version=expected_version,
                                                changes={**values, "emergency_contact": contact})
        return to_fhir(changed)

    async def delete(self, ctx: Ctx, rid: str) -> None:
        ctx.allow("Patient", "d")
        await patients.erase_patient(ctx.session, ctx.principal, as_uuid(rid, "Patient"))


def _version(v: patients.PatientVersion, rid: str | None) -> Version:
    method = {"created": "POST", "updated": "PUT", "deleted": "DELETE"}[v.change]
    res = to_fhir(v.patient) if v.patient is not None and method != "DELETE" else None
    return Version(rid or str(v.patient_id), v.version, v.at, method, res)

