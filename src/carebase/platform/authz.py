"""Who is calling and what they may do: roles, named permissions and the principal.

Permissions are named as in the CureVirtual seed (``read:own_patients`` style). Services check
them with ``require``; routes declare them too, so the OpenAPI and the code say the same thing.
"""

from __future__ import annotations

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

    @classmethod
    def of(cls, account_id: uuid.UUID, tenant_id: uuid.UUID | None, roles: tuple[str, ...] | list[str],
           session_id: uuid.UUID | None = None, mfa: bool = False) -> Principal:
        return cls(account_id, tenant_id, tuple(roles), session_id, mfa, permissions_for(roles))

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
