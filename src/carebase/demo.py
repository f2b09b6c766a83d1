"""Demo data: two clinics with one user per role each, so isolation can be seen and probed.

Idempotent: running it again adds whatever is missing and changes nothing else.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from carebase.identity import service as identity
from carebase.patients import service as patients
from carebase.platform.authz import Principal
from carebase.platform.db import set_context
from carebase.tenants import service as tenants

DEMO_ROLES = ("admin", "doctor", "nurse", "receptionist", "pharmacist", "lab", "patient")

TENANTS = (
    # slug, name, e-mail domain, timezone, demo patient
    ("demo", "Demo Clinic", "demo.carebase.local", "Asia/Kolkata",
     {"given_name": "Asha", "family_name": "Verma", "birth_date": date(1987, 4, 12), "sex": "female",
      "phone": "+919800000001", "email": "patient@demo.carebase.local", "mrn": "DEMO-0001"}),
    ("demo2", "Second Demo Clinic", "demo2.carebase.local", "Europe/Berlin",
     {"given_name": "Ravi", "family_name": "Kumar", "birth_date": date(1979, 11, 3), "sex": "male",
      "phone": "+919800000002", "email": "patient@demo2.carebase.local", "mrn": "DEMO2-0001"}),
)


def demo_logins() -> list[str]:
    return [f"{role}@{domain}" for _, _, domain, _, _ in TENANTS for role in DEMO_ROLES]


async def seed(session: AsyncSession, password: str) -> list[str]:
    """Create the demo tenants and users (as the table owner). Returns what was created."""
    created: list[str] = []
    for slug, name, domain, tz, patient in TENANTS:
        tenant = await tenants.get_tenant_by_ref(session, slug)
        if tenant is None:
            tenant = await tenants.create_tenant(session, slug=slug, name=name, kind="clinic", timezone=tz)
            created.append(f"tenant {slug}")
        await set_context(session, tenant.id, None)
        admin_id = None
        accounts = {}
        for role in DEMO_ROLES:
            email = f"{role}@{domain}"
            account = await identity.find_account_by_email(session, email)
            if account is None:
                display = patient["given_name"] + " " + patient["family_name"] if role == "patient" \
                    else f"Demo {role.capitalize()} ({name})"
                account = await identity.create_account(
                    session, email=email, password=password, display_name=display,
                    phone=patient["phone"] if role == "patient" else None)
                created.append(email)
            accounts[role] = account
            if not any(m.tenant_id == tenant.id and m.role == role
                       for m in await tenants.memberships_of(session, account.id)):
                await tenants.add_membership(session, tenant_id=tenant.id, account_id=account.id, role=role)
            if role == "admin":
                admin_id = account.id
        admin = Principal.of(admin_id, tenant.id, ["admin"])
        existing = await patients.search_patients(session, admin, q=patient["mrn"], limit=1, purpose="operations")
        if not existing:
            location = f"{name} — Main"
            await tenants.add_location(session, admin, name=location, address=None, timezone=None)
            await patients.register_patient(session, admin, account_id=accounts["patient"].id, **patient)
            created.append(f"patient {patient['mrn']}")
    return created
