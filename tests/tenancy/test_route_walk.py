"""Every API route, called by tenant A (demo) against tenant B (demo2), over real HTTP.

The walk is generated from the routers the app mounts, so a new route is walked without touching
this file; a route with a path or query parameter, or a body, this file does not know yet fails
until it is taught here what of tenant B's to aim at (nothing is skipped).

For each (method, route, role of demo):
- a route with path parameters, aimed at demo2's resources, answers 403 or 404 (problem+json);
- a route without path parameters never returns demo2's data (ids, the patient's name...);
- no route answers 5xx;
- afterwards demo2's data is exactly what it was (every tenant-owned row of demo2, its tenant
  row, and its people's accounts and credentials).
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from psycopg import sql

from carebase import domains
from carebase.providers.codes import make_npi
from tests.conftest import PASSWORD, bearer, dead_job, login, new_staff, unique_email
from tests.tenancy.test_rls import tenant_tables

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
ROLES = ("admin", "doctor", "patient")
B = "demo2"  # tenant B, the target; tenant A is "demo"


# -- tenant B ----------------------------------------------------------------------------------


@dataclass
class TenantB:
    tenant_id: uuid.UUID
    patient_id: uuid.UUID
    location_id: uuid.UUID
    membership_id: uuid.UUID
    admin_account_id: uuid.UUID
    patient: dict[str, Any]
    dead_job_id: int
    # Strings that must never reach tenant A: every id of demo2 and its patient's personal data.
    markers: set[str] = field(default_factory=set)
    # demo2's directory entry (seeded): its id, and the values the search filters aim at.
    provider_id: uuid.UUID | None = None
    provider: dict[str, Any] = field(default_factory=dict)
    appointment_id: uuid.UUID | None = None
    exception_id: uuid.UUID | None = None
    notification_id: uuid.UUID | None = None
    encounter_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    hl7_message_id: uuid.UUID | None = None
    push_device_id: uuid.UUID | None = None  # of demo2's patient (devices belong to a person, not a tenant)
    conversation_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    attachment_id: uuid.UUID | None = None
    consultation_id: uuid.UUID | None = None
    prescription_id: uuid.UUID | None = None
    medicine_id: uuid.UUID | None = None  # on sale at demo2's pharmacy (the marketplace shows it to all)
    order_id: uuid.UUID | None = None  # its patient's order there
    import_id: uuid.UUID | None = None  # a CSV import previewed by its pharmacist
    payment_id: uuid.UUID | None = None  # its patient's payment for an order at its pharmacy (seeded)
    invoice_id: uuid.UUID | None = None  # its pharmacy's subscription invoice


def _one(owner: psycopg.Connection, query: str, params: tuple) -> Any:
    row = owner.execute(query, params).fetchone()
    assert row is not None, f"demo2 test data missing: {query} {params}"
    return row[0] if len(row) == 1 else row


def load_tenant_b(owner: psycopg.Connection) -> TenantB:
    tenant_id, tenant_name = _one(owner, "SELECT id, name FROM tenants WHERE slug = %s", (B,))
    p = owner.execute("SELECT id, given_name, family_name, mrn, phone, email, global_id, birth_date FROM patients "
                      "WHERE tenant_id = %s AND mrn = 'DEMO2-0001'", (tenant_id,)).fetchone()
    assert p is not None, "demo2's seeded patient is missing"
    membership = _one(owner, "SELECT m.id FROM memberships m JOIN accounts a ON a.id = m.account_id "
                             "WHERE m.tenant_id = %s AND a.email = %s AND m.role = 'doctor'",
                      (tenant_id, f"doctor@{B}.carebase.local"))
    location = _one(owner, "SELECT id FROM locations WHERE tenant_id = %s ORDER BY created_at, id LIMIT 1",
                    (tenant_id,))
    admin = _one(owner, "SELECT id FROM accounts WHERE email = %s", (f"admin@{B}.carebase.local",))
    job = owner.execute("SELECT id FROM procrastinate_jobs WHERE status = 'failed' AND args->>'tenant_id' = %s "
                        "ORDER BY id LIMIT 1", (str(tenant_id),)).fetchone()
    b = TenantB(tenant_id, p[0], location, membership, admin,
                dict(zip(("id", "given_name", "family_name", "mrn", "phone", "email", "global_id", "birth_date"), p,
                         strict=True)),
                job[0] if job else dead_job(owner, tenant_id))
    ids = owner.execute("""
        SELECT id FROM patients WHERE tenant_id = %(t)s
        UNION SELECT id FROM locations WHERE tenant_id = %(t)s
        UNION SELECT id FROM memberships WHERE tenant_id = %(t)s
        UNION SELECT id FROM providers WHERE tenant_id = %(t)s
        UNION SELECT account_id FROM memberships WHERE tenant_id = %(t)s AND account_id NOT IN (
            SELECT account_id FROM memberships WHERE tenant_id <> %(t)s)""", {"t": tenant_id}).fetchall()
    b.markers = {str(tenant_id), tenant_name, *(str(r[0]) for r in ids),
                 *(str(v) for k, v in b.patient.items() if k != "id" and v)}
    row = owner.execute("SELECT id, npi, family_name, specialty, city, languages FROM providers "
                        "WHERE tenant_id = %s ORDER BY created_at, id LIMIT 1", (tenant_id,)).fetchone()
    assert row is not None, "demo2's seeded provider is missing"
    b.provider_id = row[0]
    b.provider = dict(zip(("id", "npi", "family_name", "specialty", "city", "languages"), row, strict=True))
    b.appointment_id = _one(owner, "SELECT id FROM appointments WHERE tenant_id = %s ORDER BY created_at LIMIT 1",
                            (tenant_id,))
    b.exception_id = _one(owner, "SELECT id FROM availability_exceptions WHERE tenant_id = %s LIMIT 1", (tenant_id,))
    b.notification_id = _one(owner, "SELECT id FROM notifications WHERE tenant_id = %s LIMIT 1", (tenant_id,))
    b.encounter_id = _one(owner, "SELECT id FROM encounters WHERE tenant_id = %s LIMIT 1", (tenant_id,))
    owner.execute("INSERT INTO push_devices (id, account_id, kind, address) SELECT gen_random_uuid(), a.id, 'fcm', "
                  "'route-walk-demo2-device' FROM accounts a WHERE a.email = %s ON CONFLICT (address) DO NOTHING",
                  (f"patient@{B}.carebase.local",))
    b.push_device_id = _one(owner, "SELECT id FROM push_devices WHERE address = 'route-walk-demo2-device'", ())
    b.conversation_id, b.message_id = _one(owner, "SELECT conversation_id, id FROM messages WHERE tenant_id = %s "
                                                  "ORDER BY created_at LIMIT 1", (tenant_id,))
    owner.execute("INSERT INTO message_attachments (id, tenant_id, conversation_id, uploaded_by, storage_key, "
                  "filename, content_type, size, sha256) SELECT gen_random_uuid(), tenant_id, conversation_id, "
                  "sender_id, 'attachments/route-walk', 'walk.txt', 'text/plain', 1, repeat('0', 64) FROM messages "
                  "WHERE id = %s AND NOT EXISTS (SELECT 1 FROM message_attachments WHERE tenant_id = %s)",
                  (b.message_id, tenant_id))
    b.attachment_id = _one(owner, "SELECT id FROM message_attachments WHERE tenant_id = %s LIMIT 1", (tenant_id,))
    b.consultation_id = _one(owner, "SELECT id FROM consultations WHERE tenant_id = %s ORDER BY started_at LIMIT 1",
                             (tenant_id,))
    b.prescription_id = _one(owner, "SELECT id FROM prescriptions WHERE tenant_id = %s ORDER BY created_at LIMIT 1",
                             (tenant_id,))
    b.medicine_id = _one(owner, "SELECT id FROM pharmacy_medicines WHERE tenant_id = %s ORDER BY name LIMIT 1",
                         (tenant_id,))
    b.order_id = _one(owner, "SELECT id FROM pharmacy_orders WHERE tenant_id = %s ORDER BY placed_at LIMIT 1",
                      (tenant_id,))
    owner.execute("INSERT INTO pharmacy_medicine_imports (id, tenant_id, created_by, sha256, total_rows, rows, errors) "
                  "SELECT gen_random_uuid(), %s, %s, repeat('0', 64), 0, '[]', '[]' WHERE NOT EXISTS "
                  "(SELECT 1 FROM pharmacy_medicine_imports WHERE tenant_id = %s)", (tenant_id, admin, tenant_id))
    b.import_id = _one(owner, "SELECT id FROM pharmacy_medicine_imports WHERE tenant_id = %s LIMIT 1", (tenant_id,))
    b.payment_id = _one(owner, "SELECT id FROM payments WHERE tenant_id = %s ORDER BY created_at LIMIT 1", (tenant_id,))
    owner.execute("INSERT INTO pharmacy_subscription_invoices (id, tenant_id, number, kind, plan, period_start, "
                  "period_end, description, net_minor, tax_name, tax_rate_bps, tax_minor, total_minor, currency, status) "
                  "SELECT gen_random_uuid(), %s, 'SUB-WALK-1', 'checkout', 'basic', now(), now() + interval '30 days', "
                  "'Basic plan', 1900, 'VAT', 1900, 361, 2261, 'EUR', 'open' WHERE NOT EXISTS "
                  "(SELECT 1 FROM pharmacy_subscription_invoices WHERE tenant_id = %s)", (tenant_id, tenant_id))
    b.invoice_id = _one(owner, "SELECT id FROM pharmacy_subscription_invoices WHERE tenant_id = %s ORDER BY created_at "
                               "LIMIT 1", (tenant_id,))
    b.markers |= {str(b.order_id), str(b.import_id), str(b.payment_id), str(b.invoice_id)}
    owner.execute("INSERT INTO api_keys (id, tenant_id, name, key_hash, scope, created_by, created_at) "
                  "SELECT gen_random_uuid(), %s, 'walk feed', 'walk-' || %s, 'hl7:ingest', %s, now() WHERE NOT EXISTS "
                  "(SELECT 1 FROM api_keys WHERE tenant_id = %s)", (tenant_id, str(tenant_id), admin, tenant_id))
    b.api_key_id = _one(owner, "SELECT id FROM api_keys WHERE tenant_id = %s ORDER BY created_at LIMIT 1", (tenant_id,))
    if owner.execute("SELECT 1 FROM hl7_messages WHERE tenant_id = %s", (tenant_id,)).fetchone() is None:
        from carebase.hl7v2.service import _sealing
        from carebase.platform import crypto

        message_id = uuid.uuid4()
        key, aad = _sealing(message_id)
        owner.execute("INSERT INTO hl7_messages (id, tenant_id, api_key_id, via, control_id, sender, message_type, "
                      "sealed_body, status, ack_code, error, received_at) VALUES (%s, %s, %s, 'http', 'WALK1', "
                      "'HIS^WALK', 'ADT^A08', %s, 'error', 'AE', 'walk', now())",
                      (message_id, tenant_id, b.api_key_id, crypto.seal(key, b"MSH|^~\\&|HIS|WALK", aad)))
    b.hl7_message_id = _one(owner, "SELECT id FROM hl7_messages WHERE tenant_id = %s ORDER BY received_at LIMIT 1",
                            (tenant_id,))
    b.markers |= {str(b.api_key_id), str(b.hl7_message_id)}
    b.markers |= {str(b.appointment_id), str(b.exception_id), str(b.notification_id), str(b.encounter_id),
                  str(b.push_device_id), str(b.conversation_id), str(b.message_id), str(b.attachment_id),
                  str(b.consultation_id), str(b.prescription_id)}
    b.markers |= {row[1], row[2]}  # its NPI and name (the specialty and city may well exist in demo too)
    return b


def snapshot(owner: psycopg.Connection, b: TenantB) -> dict[str, list[str]]:
    """All of demo2's data: its rows in every tenant-owned table (events included, so any append
    to its streams shows), its tenant row, and its people's accounts and credentials."""
    snap = {}
    for table in tenant_tables(owner):
        rows = owner.execute(sql.SQL("SELECT * FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)),
                             (b.tenant_id,)).fetchall()
        snap[table] = sorted(map(repr, rows))
    people = "SELECT account_id FROM memberships WHERE tenant_id = %s"
    for table, query in (("tenants", "SELECT * FROM tenants WHERE id = %s"),
                         ("accounts", f"SELECT * FROM accounts WHERE id IN ({people})"),
                         ("credentials", f"SELECT * FROM credentials WHERE account_id IN ({people})"),
                         ("jobs", "SELECT * FROM procrastinate_jobs WHERE args->>'tenant_id' = %s::text")):
        snap[table] = sorted(map(repr, owner.execute(query, (b.tenant_id,)).fetchall()))
    return snap


def changes(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    out = []
    for table in sorted(before.keys() | after.keys()):
        old, new = set(before.get(table, [])), set(after.get(table, []))
        if old != new:
            out.append(f"{table}: {len(old - new)} rows gone or changed, {len(new - old)} rows new or changed: "
                       f"{sorted(new - old)[:3]}")
    return out


def leaks(response: httpx.Response, b: TenantB, request_path: str) -> list[str]:
    # A problem's "instance" echoes the request path, which carries the id the caller sent.
    text = response.text.replace(request_path, "<request path>")
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return sorted(m for m in b.markers if m in text or m in headers)


# -- what to aim at ----------------------------------------------------------------------------

# Path parameters: demo2's resource of the right kind. A name not listed here fails the walk.
PATH_PARAMS: dict[str, Callable[[TenantB], Any]] = {
    "patient_id": lambda b: b.patient_id,
    "location_id": lambda b: b.location_id,
    "membership_id": lambda b: b.membership_id,
    "tenant_id": lambda b: b.tenant_id,
    "job_id": lambda b: b.dead_job_id,
    "provider_id": lambda b: b.provider_id,
    "appointment_id": lambda b: b.appointment_id,
    "exception_id": lambda b: b.exception_id,
    "notification_id": lambda b: b.notification_id,
    "encounter_id": lambda b: b.encounter_id,
    "device_id": lambda b: b.push_device_id,
    "conversation_id": lambda b: b.conversation_id,
    "message_id": lambda b: b.message_id,
    "attachment_id": lambda b: b.attachment_id,
    "consultation_id": lambda b: b.consultation_id,
    "prescription_id": lambda b: b.prescription_id,
    "medicine_id": lambda b: b.medicine_id,
    "order_id": lambda b: b.order_id,
    "pharmacy_id": lambda b: b.tenant_id,  # a pharmacy is its organization
    "import_id": lambda b: b.import_id,
    "payment_id": lambda b: b.payment_id,
    "invoice_id": lambda b: b.invoice_id,
    "key_id": lambda b: b.api_key_id,
    "hl7_message_id": lambda b: b.hl7_message_id,
}

# Query parameters: demo2's values where the name refers to something of demo2's; None leaves the
# route's default. A name not listed here fails the walk.
QUERY_PARAMS: dict[str, Callable[[TenantB], Any] | None] = {
    "q": lambda b: b.patient["family_name"] or b.patient["mrn"],  # the mrn once the name is erased
    "patient_id": lambda b: b.patient_id,
    "actor_account_id": lambda b: b.admin_account_id,
    "channel": lambda b: f"tenant:{b.tenant_id}:patients",  # demo2's live feed: must be refused
    "limit": None,
    "cursor": None,
    "birth_date": lambda b: b.patient["birth_date"],
    "provider_id": lambda b: b.provider_id,
    "location_id": lambda b: b.location_id,
    "start_date": lambda b: "2031-01-06",
    "days": None,
    "from": None,
    "to": None,
    "status": None,
    "type": None,  # a visit type (slots): optional, tenant-neutral
    "before": None,
    "unread_only": None,
    "government_id_system": None,
    "government_id_value": None,
    # The provider directory's filters, aimed at demo2's own provider.
    "specialty": lambda b: b.provider["specialty"],
    "language": lambda b: b.provider["languages"][0],
    "city": lambda b: b.provider["city"],
    "telemedicine_enabled": None,
    "accepts_new_patients": None,
    "verified": None,
    # The marketplace's search, aimed at demo2's pharmacy (whose shop window is public by design).
    "pharmacy_id": lambda b: b.tenant_id,
    "lat": lambda b: 52.52,  # demo2's pharmacy is in Berlin
    "lon": lambda b: 13.388,
    "radius_km": None,
    "category": None,
    "dosage_form": None,
    "requires_prescription": None,
    "in_stock": None,
    "offset": None,
    "same_pharmacy": None,
    "open": None,
    "skip_invalid": None,
    "scope": None,  # payments/transactions: the caller's own, or their organization's
    "currency": None,
}


@dataclass
class Caller:
    role: str
    email: str
    password: str
    tokens: dict


def _with_key(c: Caller) -> dict[str, str]:
    return {**bearer(c.tokens), "Idempotency-Key": f"walk-{uuid.uuid4()}"}


# A minimal valid body per route that needs one (httpx keyword arguments). They never name demo2
# except where asking for demo2 is itself the probe (a demo user asking for a demo2 token).
BODIES: dict[tuple[str, str], Callable[[Caller, TenantB], dict]] = {
    ("POST", "/api/v1/auth/register"): lambda c, b: {"json": {
        "email": unique_email("walk"), "password": "a long passphrase", "display_name": "Route Walk"}},
    ("POST", "/api/v1/auth/token"): lambda c, b: {"data": {
        "username": c.email, "password": c.password, "tenant": B}},
    # A key naming demo2 but not one of its keys: refused before any of demo2's rows is touched.
    ("POST", "/api/v1/auth/client-token"): lambda c, b: {"data": {
        "grant_type": "client_credentials", "client_secret": f"cbk_{b.tenant_id.hex}_walk-{c.role}"}},
    ("POST", "/api/v1/auth/refresh"): lambda c, b: {"json": {"refresh_token": c.tokens["refresh_token"]}},
    ("POST", "/api/v1/auth/otp/request"): lambda c, b: {"json": {"email": unique_email("walk"),
                                                                  "channel": "email"}},
    ("POST", "/api/v1/auth/otp/verify"): lambda c, b: {"json": {"challenge_id": str(uuid.uuid4()),
                                                                 "code": "000000"}},
    ("POST", "/api/v1/auth/totp/verify"): lambda c, b: {"json": {"code": "000000"}},
    ("POST", "/api/v1/auth/password/forgot"): lambda c, b: {"json": {"email": unique_email("walk")}},
    ("POST", "/api/v1/auth/password/reset"): lambda c, b: {"json": {"token": "x" * 43,
                                                                     "new_password": "a long passphrase"}},
    ("POST", "/api/v1/locations"): lambda c, b: {"json": {"name": "Route walk location"}},
    ("POST", "/api/v1/members"): lambda c, b: {"json": {"email": unique_email("walk"), "display_name": "Route Walk",
                                                        "role": "nurse"}},
    ("POST", "/api/v1/patients"): lambda c, b: {"json": {"given_name": "Route", "family_name": "Walker",
                                                         "birth_date": "1990-01-01", "allow_duplicate": True}},
    ("PATCH", "/api/v1/patients/{patient_id}"): lambda c, b: {"json": {"given_name": "Overwritten"}},
    ("PUT", "/api/v1/patients/{patient_id}/consents"): lambda c, b: {"json": {"data_sharing": True}},
    ("POST", "/api/v1/patients/{patient_id}/merge"): lambda c, b: {"json": {"into": str(b.patient_id)}},
    # demo2's tenant in the token, so the lookup runs under demo2's context: it must still find nothing.
    ("POST", "/api/v1/patient-email-verifications"): lambda c, b: {"json": {"token": f"{b.tenant_id.hex}.forged"}},
    ("PATCH", "/api/v1/me/patient"): lambda c, b: {"json": {"preferred_language": "en"}},
    ("PUT", "/api/v1/me/patient/consents"): lambda c, b: {"json": {"data_sharing": True}},
    ("POST", "/api/v1/providers"): lambda c, b: {"json": {
        "npi": make_npi(f"{uuid.uuid4().int % 10**9:09d}"), "given_name": "Route", "family_name": "Walker",
        "specialty": b.provider["specialty"], "country": "IN"}},
    ("PATCH", "/api/v1/providers/{provider_id}"): lambda c, b: {"json": {"city": "Overwritten"}},
    ("PUT", "/api/v1/providers/{provider_id}/availability"): lambda c, b: {"json": {
        "location_id": str(b.location_id), "windows": [{"weekday": 0, "starts": "08:00", "ends": "09:00"}]}},
    ("POST", "/api/v1/providers/{provider_id}/availability-exceptions"): lambda c, b: {"json": {
        "starts_at": "2031-01-01T00:00:00Z", "ends_at": "2031-01-02T00:00:00Z", "reason": "walk"}},
    # Everything demo2's: a demo caller must not be able to book into it.
    ("POST", "/api/v1/appointments"): lambda c, b: {"json": {
        "patient_id": str(b.patient_id), "provider_id": str(b.provider_id), "location_id": str(b.location_id),
        "type": "emergency", "starts_at": "2031-01-06T10:00:00Z"}},
    ("POST", "/api/v1/patients/{patient_id}/encounters"): lambda c, b: {"json": {"diagnoses": ["I10"]}},
    ("PUT", "/api/v1/me/notification-preferences"): lambda c, b: {"json": {"language": "en"}},
    ("POST", "/api/v1/me/push-devices"): lambda c, b: {"json": {"kind": "fcm", "token": f"walk-{uuid.uuid4().hex}"}},
    # Into demo2's conversation: a demo caller is no participant.
    ("POST", "/api/v1/consultations"): lambda c, b: {"json": {"text": "a mild headache since this morning"}},
    ("POST", "/api/v1/consultations/{consultation_id}/messages"): lambda c, b: {"json": {"text": "since morning"}},
    ("POST", "/api/v1/consultations/{consultation_id}/handled"): lambda c, b: {"json": {"note": "route walk"}},
    ("POST", "/api/v1/patients/{patient_id}/prescriptions"): lambda c, b: {"json": {
        "items": [{"medicine": "paracetamol", "dose": 500, "unit": "mg", "times_per_day": 3}]}},
    ("PATCH", "/api/v1/prescriptions/{prescription_id}"): lambda c, b: {"json": {
        "items": [{"medicine": "paracetamol", "dose": 500, "unit": "mg", "times_per_day": 3}]}},
    ("POST", "/api/v1/prescriptions/{prescription_id}/approve"): lambda c, b: {"json": {
        "override_reason": "route walk"}},
    ("POST", "/api/v1/prescriptions/{prescription_id}/reject"): lambda c, b: {"json": {"notes": "route walk"}},
    ("POST", "/api/v1/prescriptions/{prescription_id}/revoke"): lambda c, b: {"json": {"reason": "route walk"}},
    ("POST", "/api/v1/esign/response"): lambda c, b: {"data": {"eSignResponse": '<EsignResp txn="walk"/>'}},
    ("POST", "/api/v1/prescriptions/{prescription_id}/patient-signature"): lambda c, b: {"json": {
        "image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQ"
                 "AAAABJRU5ErkJggg=="}},
    ("POST", "/api/v1/messages/send"): lambda c, b: {"json": {"conversation_id": str(b.conversation_id),
                                                               "body": "route walk"}},
    ("POST", "/api/v1/messages/attachments"): lambda c, b: {"data": {"conversation_id": str(b.conversation_id)},
                                                             "files": {"file": ("walk.txt", b"walk", "text/plain")}},
    ("POST", "/api/v1/encounters/{encounter_id}/amendments"): lambda c, b: {"json": {
        "field": "note", "value": "walk", "reason": "route walk"}},
    ("PUT", "/api/v1/pharmacy/profile"): lambda c, b: {"json": {
        "name": "Route walk pharmacy", "licence_number": "WALK-1", "address": "1 Walk Street", "lat": 52.52,
        "lon": 13.388, "delivery_fee_minor": 0, "currency": "EUR"}},
    ("POST", "/api/v1/pharmacy/medicines"): lambda c, b: {"json": {
        "name": "Walkocin", "category": "Painkiller", "mrp_minor": 100, "price_minor": 90, "currency": "EUR"}},
    ("PUT", "/api/v1/pharmacy/medicines/{medicine_id}"): lambda c, b: {"json": {
        "name": "Overwritten", "category": "Painkiller", "mrp_minor": 100, "price_minor": 90, "currency": "EUR"}},
    ("POST", "/api/v1/pharmacy/medicines/import"): lambda c, b: {"files": {"file": (
        "walk.csv", b"name,category,mrp\nWalkocin,Painkiller,1.00\n", "text/csv")}},
    ("PATCH", "/api/v1/pharmacy/medicines/{medicine_id}/stock"): lambda c, b: {"json": {
        "reason": "adjusted", "set_to": 0}},
    ("PATCH", "/api/v1/pharmacy/orders/{order_id}/status"): lambda c, b: {"json": {"status": "rejected",
                                                                                    "note": "route walk"}},
    ("POST", "/api/v1/pharmacy/orders/{order_id}/reject"): lambda c, b: {"json": {"reason": "route walk"}},
    # Buying at demo2's pharmacy is what the marketplace is for: the cart is the caller's own.
    ("POST", "/api/v1/patient/cart/items"): lambda c, b: {"json": {"medicine_id": str(b.medicine_id)}},
    ("PATCH", "/api/v1/patient/cart/items/{medicine_id}"): lambda c, b: {"json": {"quantity": 1}},
    ("POST", "/api/v1/patient/cart/from-prescription"): lambda c, b: {"json": {
        "prescription_id": str(b.prescription_id), "pharmacy_id": str(b.tenant_id)}},
    ("POST", "/api/v1/patient/orders"): lambda c, b: {"json": {
        "pharmacy_id": str(b.tenant_id), "fulfilment": "pickup", "contact_name": "Route Walker"}},
    ("PATCH", "/api/v1/patient/orders/{order_id}/cancel"): lambda c, b: {"json": {"reason": "route walk"}},
    # Money: paying for, confirming and refunding demo2's order and payment are the probes; a
    # top-up is the caller's own wallet. Money-moving POSTs carry their Idempotency-Key.
    ("POST", "/api/v1/payments/create-intent"): lambda c, b: {"json": {"purpose": "order",
                                                                       "reference_id": str(b.order_id)},
                                                              "headers": _with_key(c)},
    ("POST", "/api/v1/payments/confirm"): lambda c, b: {"json": {"payment_id": str(b.payment_id)}},
    ("POST", "/api/v1/payments/refund"): lambda c, b: {"json": {"payment_id": str(b.payment_id), "reason": "walk"},
                                                       "headers": _with_key(c)},
    ("POST", "/api/v1/wallet/top-up"): lambda c, b: {"json": {"amount_minor": 100}, "headers": _with_key(c)},
    ("POST", "/api/v1/pharmacy/orders/{order_id}/delivery-code"): lambda c, b: {"json": {"code": "123456"}},
    # A subscription is the caller's own organization's (demo's pharmacy: a clinic's admin has none).
    ("POST", "/api/v1/pharmacy/subscription/checkout"): lambda c, b: {"json": {"plan": "basic"},
                                                                      "headers": _with_key(c)},
    ("POST", "/api/v1/pharmacy/subscription/change-plan"): lambda c, b: {"json": {"plan": "pro"}},
    ("POST", "/api/v1/appointments/{appointment_id}/status"): lambda c, b: {"json": {"status": "cancelled",
                                                                                     "reason": "walk"}},
    ("POST", "/api/v1/api-keys"): lambda c, b: {"json": {"name": "walk", "scope": "hl7:ingest"}},
    ("POST", "/api/v1/hl7/v2"): lambda c, b: {"content": f"MSH|^~\\&|HIS|X|CB|Y|20260101||ADT^A08|W{c.role}|P|2.5\r"
                                                         f"PID|1||{b.patient['mrn']}^^^X^MR||Walk^Er||19700101|M\r"},
    ("POST", "/api/v1/appointments/{appointment_id}/reschedule"): lambda c, b: {"json": {
        "starts_at": "2031-01-06T11:00:00Z"}},
}


# -- the routes --------------------------------------------------------------------------------


def flat_routes(routes) -> list[tuple[APIRoute, str]]:
    """Every APIRoute with its effective path. FastAPI >= 0.16x keeps included routers as
    ``_IncludedRouter`` entries of ``app.routes`` and resolves them through route contexts;
    older versions copied the routes into ``app.routes``."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        pairs = [(r, getattr(r, "path", None)) for r in routes]
    else:
        pairs = [(ctx.original_route, ctx.path) for ctx in iter_route_contexts(list(routes))]
    return [(r, path) for r, path in pairs if isinstance(r, APIRoute)]


def api_routes(routes) -> list[tuple[str, str]]:
    return sorted({(method, path) for r, path in flat_routes(routes) if path.startswith(API + "/")
                   for method in r.methods - {"HEAD", "OPTIONS"}})


def mounted_routes() -> list[tuple[str, str]]:
    """What create_app mounts (it includes every router of ``domains.ROUTERS``); known at collection
    time. ``test_the_walk_covers_every_route`` checks it against the running app."""
    return api_routes(r for name in domains.ROUTERS for r in importlib.import_module(name).router.routes)


WALK = [pytest.param(method, path, role, id=f"{method} {path} as {role}")
        for method, path in mounted_routes() for role in ROLES]


def path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)(?::\w+)?}", path)


@pytest.fixture(scope="module")
def callers(backend, server) -> dict[str, Caller]:
    """Tenant A's callers: fresh accounts of demo with each role (invited by demo's admin; the
    patient registered themselves at demo and has a chart there). Fresh, so the walk's logouts and
    authenticator enrolments never touch the shared demo users."""
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            psycopg.connect(backend.owner_dsn, autocommit=True) as owner:
        out = {}
        for role in ROLES:
            if role == "patient":
                email, password = unique_email("walk-patient"), "a long passphrase"
                r = client.post("/api/v1/auth/register", json={"email": email, "password": password,
                                                               "display_name": "Walk Patient", "tenant": "demo"})
                assert r.status_code == 201, r.text
                admin = login(client, "admin@demo.carebase.local")
                r = client.post("/api/v1/patients", headers=bearer(admin), json={
                    "given_name": "Walk", "family_name": "Patient", "birth_date": "1991-02-03",
                    "account_id": r.json()["id"], "allow_duplicate": True})
                assert r.status_code == 201, r.text
            else:
                staff = new_staff(client, owner, role)
                email, password = staff["email"], staff["password"]
            tokens = login(client, email, password)
            assert tokens["roles"] == [role], tokens
            out[role] = Caller(role, email, password, tokens)
        return out


@pytest.fixture
def tenant_b(owner) -> TenantB:
    return load_tenant_b(owner)


def build_request(server, method: str, path: str, caller: Caller, b: TenantB) -> tuple[str, dict]:
    """The URL (demo2's ids in every path parameter) and httpx arguments for one call."""
    route = next((r for r, p in flat_routes(server.app.routes) if p == path and method in r.methods), None)
    assert route is not None, f"{method} {path} is not mounted on the running app"
    unknown = [p for p in path_params(path) if p not in PATH_PARAMS]
    if unknown:
        pytest.fail(f"{method} {path}: unknown path parameter(s) {unknown}; add them to PATH_PARAMS "
                    f"with the id of a demo2 resource of that kind")
    url = path.format(**{p: PATH_PARAMS[p](b) for p in path_params(path)})

    operation = server.app.openapi()["paths"][path][method.lower()]
    params = {}
    for param in operation.get("parameters", []):
        if param["in"] != "query":
            continue
        name = param["name"]
        if name not in QUERY_PARAMS:
            pytest.fail(f"{method} {path}: unknown query parameter {name!r}; add it to QUERY_PARAMS")
        value = QUERY_PARAMS[name]
        if value is None:
            assert not param.get("required"), f"{method} {path}: required query parameter {name!r} has no value"
            continue
        params[name] = str(value(b))

    # Every POST carries an Idempotency-Key: routes that move money refuse to go on without one (428),
    # and the walk is about what they do with demo2's ids, not about the missing header.
    kwargs: dict = {"params": params, "headers": _with_key(caller) if method == "POST" else bearer(caller.tokens)}
    body = operation.get("requestBody")
    if (method, path) in BODIES:
        assert body is not None, f"{method} {path} takes no body; remove it from BODIES"
        kwargs.update(BODIES[(method, path)](caller, b))
    elif body is not None and body.get("required"):
        pytest.fail(f"{method} {path} needs a body; add a minimal valid one to BODIES")
    return url, kwargs


# -- the tests ---------------------------------------------------------------------------------


def test_the_walk_covers_every_route(server):
    walked = set(mounted_routes())
    running = set(api_routes(server.app.routes))
    assert running == walked, f"mounted but not walked: {sorted(running - walked)}; " \
                              f"walked but not mounted: {sorted(walked - running)}"
    assert len(walked) >= 20  # the foundation's identity, tenants, patients and audit routes
    assert set(BODIES) <= walked, f"BODIES for routes that do not exist: {sorted(set(BODIES) - walked)}"


@pytest.mark.parametrize("method,path,role", WALK)
def test_tenant_a_cannot_reach_tenant_b(server, client, owner, callers, tenant_b, method, path, role):
    caller = callers[role]
    caller.tokens = login(client, caller.email, caller.password)  # fresh: the walk logs sessions out
    url, kwargs = build_request(server, method, path, caller, tenant_b)

    before = snapshot(owner, tenant_b)
    r = client.request(method, url, **kwargs)
    after = snapshot(owner, tenant_b)

    what = f"{method} {url} as {role} of demo -> {r.status_code}: {r.text[:300]}"
    assert r.status_code < 500, what
    public = path in MARKETPLACE and role == "patient"
    if r.status_code >= 400:
        assert r.headers["content-type"] == PROBLEM_JSON, what
        problem = r.json()
        assert problem["status"] == r.status_code, what
        assert not (r.status_code == 422 and "errors" in problem), \
            f"the walk sent a malformed request, so the route was never really probed: {what}"
    if path_params(path) and not public:
        assert r.status_code in (403, 404), f"demo2's resource was not refused: {what}"
    if public:
        assert r.status_code in MARKETPLACE[path], what
        tenant_b.markers.discard(str(tenant_b.tenant_id))  # the pharmacy's id is its organization's
    leaked = leaks(r, tenant_b, url)
    assert not leaked, f"demo2 data in the answer {leaked}: {what}"
    changed = changes(before, after)
    assert not changed, f"demo2's data changed: {changed}; {what}"


# The marketplace's shop windows: a patient of any clinic browses every listed pharmacy and buys
# there (into their own cart, their own order); what demo2's pharmacy sells is public, and its id
# is its organization's. Expected answers for demo's patient:
MARKETPLACE = {
    "/api/v1/patient/pharmacies/{pharmacy_id}": {200},
    "/api/v1/patient/pharmacies/{pharmacy_id}/medicines": {200},
    "/api/v1/patient/medicines/{medicine_id}": {200},
    "/api/v1/patient/medicines/{medicine_id}/alternatives": {200},
    "/api/v1/patient/medicines/search": {200},
    "/api/v1/patient/pharmacies": {200},
    "/api/v1/patient/cart": {200},
    "/api/v1/patient/cart/items": {200},
    "/api/v1/patient/cart/items/{medicine_id}": {200, 404},  # removing: nothing there; changing: not in the cart
    "/api/v1/patient/orders": {200, 409},  # listing their own; checking out: their cart holds nothing of demo2's
}

GET_BY_ID = [pytest.param(path, id=path) for method, path in mounted_routes() if method == "GET" and path_params(path)]


# Conversations are for their participants only: demo2's admin is in none, its doctor is in the
# seeded one. Consultations and prescriptions are for their patient and the clinicians (not
# admins). An attachment download answers with a redirect to a short-lived link.
CONTROL_ROLE = {"/api/v1/messages/conversations/{conversation_id}": "doctor",
                "/api/v1/consultations/{consultation_id}": "doctor",
                "/api/v1/prescriptions/{prescription_id}": "doctor",
                "/api/v1/prescriptions/{prescription_id}/pdf": "doctor",
                "/api/v1/messages/attachments/{attachment_id}": "doctor",
                "/api/v1/pharmacy/medicines/{medicine_id}": "pharmacist",
                "/api/v1/pharmacy/medicines/{medicine_id}/stock-history": "pharmacist",
                "/api/v1/pharmacy/orders/{order_id}": "pharmacist",
                "/api/v1/pharmacy/medicines/import/{import_id}": "pharmacist",
                "/api/v1/pharmacy/subscription/invoices/{invoice_id}/pdf": "pharmacist",
                "/api/v1/pharmacy/orders/{order_id}/receipt.pdf": "pharmacist",
                "/api/v1/patient/orders/{order_id}/receipt.pdf": "patient",
                "/api/v1/patient/orders/{order_id}": "patient",
                "/api/v1/patient/pharmacies/{pharmacy_id}": "patient",
                "/api/v1/patient/pharmacies/{pharmacy_id}/medicines": "patient",
                "/api/v1/patient/medicines/{medicine_id}": "patient",
                "/api/v1/patient/medicines/{medicine_id}/alternatives": "patient"}
REDIRECTS = {"/api/v1/messages/attachments/{attachment_id}"}
# demo2's seeded prescription is a draft: the public verification knows only signed ones (404) and
# there is no PDF of a draft yet (409), for its own staff too; tests/prescribing covers signed ones.
UNSIGNED = {"/api/v1/prescriptions/verify/{prescription_id}": 404,
            "/api/v1/prescriptions/{prescription_id}/pdf": 409,
            # demo2's seeded order is not completed yet: no receipt (tests/payments covers completed ones).
            "/api/v1/pharmacy/orders/{order_id}/receipt.pdf": 409,
            "/api/v1/patient/orders/{order_id}/receipt.pdf": 409}


@pytest.mark.parametrize("path", GET_BY_ID)
def test_tenant_b_reaches_the_same_resources(server, client, tenant_b, path):
    """Control: the ids the walk aims at are real and readable by demo2's own staff, so demo's
    403/404 is tenant isolation and not a bogus id."""
    role = CONTROL_ROLE.get(path, "admin")
    email = f"{role}@{B}.carebase.local"
    caller = Caller(role, email, PASSWORD, login(client, email))
    url, kwargs = build_request(server, "GET", path, caller, tenant_b)
    r = client.get(url, **kwargs)
    expected = 307 if path in REDIRECTS else UNSIGNED.get(path, 200)
    assert r.status_code == expected, f"GET {url} as demo2's {role} -> {r.status_code}: {r.text[:300]}"
    if expected != 200:
        return
    if "json" not in r.headers["content-type"]:  # a download (the record as a PDF): the 200 is the proof
        return
    body = r.json()
    if isinstance(body, dict) and "id" in body:  # a record (lists and charts: the 200 is the proof)
        assert str(body["id"]) in url
