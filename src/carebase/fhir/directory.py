"""Who and where: Practitioner and PractitionerRole (the provider directory), Organization (the
caller's own tenant) and Location (its sites)."""

from __future__ import annotations

from typing import Any

from carebase.fhir.base import (
    SID,
    Ctx,
    Page,
    Query,
    Resource,
    as_uuid,
    meta,
    ref,
    ref_id,
    resource,
    strip_empty,
    token,
)
from carebase.fhir.search import page_in_memory
from carebase.providers import service as providers
from carebase.tenants import service as tenants

NPI = "http://hl7.org/fhir/sid/us-npi"


def practitioner(p: providers.Provider) -> dict[str, Any]:
    return strip_empty({
        "resourceType": "Practitioner", "id": str(p.id), "meta": meta(p.version, p.updated_at),
        "identifier": [{"system": NPI, "value": p.npi},
                       {"system": SID + "license", "value": p.license_number} if p.license_number else None],
        "active": True,
        "name": [{"use": "official", "family": p.family_name, "given": p.given_name.split(),
                  "prefix": ["Dr."]}],
        "telecom": [{"system": "phone", "value": p.phone, "use": "work"} if p.phone else None,
                    {"system": "email", "value": p.email, "use": "work"} if p.email else None],
        "address": [{"use": "work", "city": p.city, "state": p.state_province, "country": p.country}],
        "qualification": [{"code": {"text": c.get("name") or c.get("title") or str(c)}} for c in p.certifications
                          if isinstance(c, dict)],
        "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": lang}]} for lang in p.languages],
    })


def practitioner_role(p: providers.Provider) -> dict[str, Any]:
    return strip_empty({
        "resourceType": "PractitionerRole", "id": str(p.id), "meta": meta(p.version, p.updated_at),
        "active": True,
        "practitioner": ref("Practitioner", p.id, p.display_name),
        "organization": ref("Organization", p.tenant_id, p.practice_name),
        "specialty": [{"text": p.specialty}, {"text": p.sub_specialty} if p.sub_specialty else None],
        "telecom": [{"system": "phone", "value": p.phone, "use": "work"} if p.phone else None],
    })


async def _providers(ctx: Ctx, q: Query, *, specialty: str | None = None) -> list[providers.Provider]:
    """Every directory entry the search names (the directory is small: walk its pages)."""
    ids = [i for values in q.each("_id") for i in values]
    ids += [ref_id(v, "Practitioner") for values in q.each("practitioner") for v in values]
    names = [values[0] for values in q.each("name")]
    npis = [token(values[0])[1] for values in q.each("identifier")]
    found: list[providers.Provider] = []
    cursor = None
    while True:
        page = await providers.search_providers(ctx.session, ctx.principal, q=names[0] if names else None,
                                                specialty=specialty, limit=providers.MAX_PAGE, cursor=cursor)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    if ids:
        found = [p for p in found if str(p.id) in ids]
    for npi in npis:
        found = [p for p in found if p.npi == npi or p.license_number == npi]
    return found


# Keys read resources as other systems send them too (merged searches): any element may be absent or null.
_SORT = {"name": lambda r: (((r.get("name") or [{}])[0] or {}).get("family") or "").lower(),
         "_lastUpdated": lambda r: (r.get("meta") or {}).get("lastUpdated")}


@resource
class PractitionerResource(Resource):
    type = "Practitioner"
    search_params = {"_id": "token", "name": "string", "identifier": "token"}
    sort_params = tuple(_SORT)
    sort_keys = _SORT

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return practitioner(await providers.get_provider(ctx.session, ctx.principal, as_uuid(rid, self.type)))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        return page_in_memory([practitioner(p) for p in await _providers(ctx, q)], q, self.sort_keys)


@resource
class PractitionerRoleResource(Resource):
    type = "PractitionerRole"
    search_params = {"_id": "token", "practitioner": "reference", "specialty": "token"}
    sort_params = ("_lastUpdated",)
    includes = {"practitioner": ("Practitioner", "practitioner"), "organization": ("Organization", "organization")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return practitioner_role(await providers.get_provider(ctx.session, ctx.principal, as_uuid(rid, self.type)))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        specialty = q.one("specialty")
        found = await _providers(ctx, q, specialty=token(specialty)[1] if specialty else None)
        return page_in_memory([practitioner_role(p) for p in found], q, _SORT)


_KIND = {"clinic": "prov", "hospital": "prov", "chain": "prov", "pharmacy": "other", "lab": "other"}


def organization(t: tenants.Tenant) -> dict[str, Any]:
    return strip_empty({
        "resourceType": "Organization", "id": str(t.id), "meta": meta(1, t.created_at),
        "identifier": [{"system": SID + "organization", "value": t.slug}],
        "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": _KIND.get(t.kind, "other")}], "text": t.kind}],
        "name": t.name,
        "partOf": ref("Organization", t.parent_id) if t.parent_id else None,
    })


@resource
class OrganizationResource(Resource):
    type = "Organization"
    search_params = {"_id": "token", "name": "string", "identifier": "token"}
    sort_params = ("_lastUpdated",)

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return organization(await tenants.visible_tenant(ctx.session, ctx.principal, as_uuid(rid, self.type)))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        own = organization(await tenants.current_tenant(ctx.session, ctx.principal))
        keep = all(own["id"] in values for values in q.each("_id"))
        keep = keep and all(own["name"].lower().startswith(v[0].lower()) for v in q.each("name"))
        keep = keep and all(token(v[0])[1] == own["identifier"][0]["value"] for v in q.each("identifier"))
        return page_in_memory([own] if keep else [], q, _SORT)


def location(loc: tenants.Location) -> dict[str, Any]:
    return strip_empty({
        "resourceType": "Location", "id": str(loc.id), "meta": meta(1, loc.created_at), "status": "active",
        "name": loc.name, "mode": "instance",
        "address": {"text": loc.address} if loc.address else None,
        "managingOrganization": ref("Organization", loc.tenant_id),
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/timezone", "valueCode": loc.timezone}],
    })


@resource
class LocationResource(Resource):
    type = "Location"
    search_params = {"_id": "token", "name": "string", "organization": "reference"}
    sort_params = ("name", "_lastUpdated")
    sort_keys = {"name": lambda r: (r.get("name") or "").lower(), "_lastUpdated": _SORT["_lastUpdated"]}
    includes = {"organization": ("Organization", "managingOrganization")}

    async def read(self, ctx: Ctx, rid: str) -> dict[str, Any]:
        ctx.allow(self.type, "r")
        return location(await tenants.get_location(ctx.session, ctx.principal, as_uuid(rid, self.type)))

    async def search(self, ctx: Ctx, q: Query) -> Page:
        ctx.allow(self.type, "s")
        found = [location(x) for x in await tenants.list_locations(ctx.session, ctx.principal)]
        for values in q.each("_id"):
            found = [x for x in found if x["id"] in values]
        for values in q.each("name"):
            found = [x for x in found if x["name"].lower().startswith(values[0].lower())]
        for values in q.each("organization"):
            found = [x for x in found if ref_id(x["managingOrganization"], "Organization") in
                     [ref_id(v, "Organization") for v in values]]
        return page_in_memory(found, q, self.sort_keys)
