"""Who is calling and what they may do: roles, named permissions and the principal.

Permissions are named as in the CureVirtual seed (``read:own_patients`` style). Services check
them with ``require``; routes declare them too, so the OpenAPI and the code say the same thing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from carebase.platform.errors import Forbidden

ROLES = ("superadmin", "admin", "doctor", "nurse", "receptionist", "pharmacist", "lab", "patient")
STAFF_ROLES = frozenset(ROLES) - {"patient"}

PERMISSIONS: dict[str, frozenset[str]] = {
    "superadmin": frozenset({"*"}),
    "admin": frozenset({
        "read:patients", "write:patients", "erase:patients", "read:audit", "manage:members",
        "manage:settings", "manage:locations", "read:members", "manage:jobs",
        "read:providers", "write:providers", "verify:providers", "manage:schedules", "manage:appointments",
        "read:charts",  # the records office: answering a patient's request for their whole record
        "manage:payments",  # refunds, the organization's transactions and balance
    }),
    "doctor": frozenset({"read:patients", "write:patients", "manage:prescriptions", "manage:appointments",
                         "write:charts", "read:charts", "read:members", "read:providers", "read:consultations"}),
    "nurse": frozenset({"read:patients", "write:patients", "manage:appointments", "read:members", "write:charts",
                        "read:charts", "read:providers", "read:consultations"}),
    "receptionist": frozenset({"read:patients", "write:patients", "manage:appointments", "read:members",
                               "read:providers", "manage:schedules"}),
    "pharmacist": frozenset({"read:own_inventory", "manage:own_inventory", "read:own_orders", "manage:own_orders",
                             "read:providers"}),
    "lab": frozenset({"read:lab_orders", "manage:lab_results", "read:providers"}),
    # Not a person's role: what an organization's API key may do (its scope narrows it further).
    "integration": frozenset({"read:patients", "write:patients", "read:charts", "write:charts", "read:providers",
                              "ingest:hl7"}),
    "patient": frozenset({"read:own_record", "manage:own_profile", "read:pharmacies", "create:orders",
                          "read:own_orders", "read:providers", "book:own_appointments", "create:consultations",
                          "manage:own_wallet"}),
}


def permissions_for(roles: tuple[str, ...] | list[str]) -> frozenset[str]:
    perms: set[str] = set()
    for r in roles:
        perms |= PERMISSIONS.get(r, frozenset())
    return frozenset(perms)


@dataclass(frozen=True)
class Principal:
    account_id: uuid.UUID
    tenant_id: uuid.UUID | None
    roles: tuple[str, ...]
    session_id: uuid.UUID | None = None
    # Second factor done in this session (staff with TOTP enrolled must have it).
    mfa: bool = False
    permissions: frozenset[str] = field(default=frozenset())
    # SMART-on-FHIR scopes the token was narrowed to ("patient/*.read user/Patient.write"); None
    # for an ordinary sign-in, which acts with the roles' full permissions.
    scope: str | None = None

    @classmethod
    def of(cls, account_id: uuid.UUID, tenant_id: uuid.UUID | None, roles: tuple[str, ...] | list[str],
           session_id: uuid.UUID | None = None, mfa: bool = False, scope: str | None = None) -> Principal:
        return cls(account_id, tenant_id, tuple(roles), session_id, mfa, permissions_for(roles), scope or None)

    def can(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions

    @property
    def is_staff(self) -> bool:
        return any(r in STAFF_ROLES for r in self.roles)


def require(principal: Principal, *permissions: str) -> None:
    """Refuse unless the principal holds at least one of the permissions."""
    if not any(principal.can(p) for p in permissions):
        raise Forbidden(f"Your role ({', '.join(principal.roles) or 'none'}) does not allow this "
                        f"(needs {' or '.join(permissions)}).", code="forbidden", required=list(permissions))


def require_tenant(principal: Principal) -> uuid.UUID:
    if principal.tenant_id is None:
        raise Forbidden("This needs an organization: sign in to one of your clinics or pharmacies first.",
                        code="no-tenant")
    return principal.tenant_id


# -- SMART on FHIR scopes ----------------------------------------------------------------------
# A token may be narrowed to SMART scopes, v1 (`patient/*.read`, `user/Patient.write`,
# `system/*.*`) or v2 (`patient/Observation.rs`). The scope never adds to what the roles allow: the
# domains still check permissions and compartments (a patient reads only their own record); the
# scope takes away. A scoped token is for the FHIR API only (see web._principal).

_SMART = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.(read|write|\*|c?r?u?d?s?)$")
# Scopes a SMART client may ask for that grant no data by themselves.
SMART_CONTEXT_SCOPES = frozenset({"openid", "fhirUser", "profile", "offline_access", "online_access", "launch",
                                  "launch/patient"})
# Carebase's own scopes, for API keys: feeding HL7 v2 messages in.
HL7_INGEST = "hl7:ingest"
_V1_ACTIONS = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class SmartScope:
    context: str  # patient | user | system
    resource: str  # a FHIR resource type or "*"
    actions: str  # some of c r u d s

    def grants(self, resource: str, action: str) -> bool:
        return self.resource in ("*", resource) and action in self.actions


def parse_smart_scopes(scope: str) -> tuple[list[SmartScope], list[str]]:
    """The data scopes in a scope string, and the words that are neither those nor known context
    scopes (``tenant:<slug>`` is Carebase's own way to pick an organization and is skipped)."""
    found, unknown = [], []
    for word in scope.split():
        if word in SMART_CONTEXT_SCOPES or word == HL7_INGEST or word.startswith("tenant:"):
            continue
        m = _SMART.match(word)
        if m is None or not m.group(3):
            unknown.append(word)
            continue
        found.append(SmartScope(m.group(1), m.group(2), _V1_ACTIONS.get(m.group(3), m.group(3))))
    return found, unknown


def require_smart(principal: Principal, resource: str, action: str) -> None:
    """Refuse a FHIR interaction the token's scopes do not cover (``action``: one of c r u d s)."""
    if principal.scope is None:
        return
    scopes, _ = parse_smart_scopes(principal.scope)
    if not any(s.grants(resource, action) for s in scopes):
        verb = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}[action]
        raise Forbidden(f"This token's scopes ({principal.scope}) do not allow you to {verb} {resource}.",
                        code="insufficient-scope", required=f"{resource}.{action}")
