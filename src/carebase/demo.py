"""Demo data: two clinics with one user per role each, so isolation can be seen and probed.

Idempotent: running it again adds whatever is missing and changes nothing else.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from carebase.encounters import service as encounters
from carebase.identity import service as identity
from carebase.consult import service as consult
from carebase.messaging import service as messaging
from carebase.patients import service as patients
from carebase.payments import service as payments
from carebase.pharmacy import service as pharmacy
from carebase.platform.authz import Principal
from carebase.platform.db import set_context
from carebase.platform.errors import NotFound
from carebase.providers import service as providers
from carebase.scheduling import service as scheduling
from carebase.tenants import service as tenants

DEMO_ROLES = ("admin", "doctor", "nurse", "receptionist", "pharmacist", "lab", "patient")

TENANTS = (
    # slug, name, e-mail domain, timezone, demo patient
    ("demo", "Demo Clinic", "demo.carebase.local", "Asia/Kolkata",
     {"given_name": "Asha", "family_name": "Verma", "birth_date": date(1987, 4, 12), "gender": "F",
      "phone": "+919800000001", "email": "patient@demo.carebase.local", "mrn": "DEMO-0001", "country": "IN",
      "timezone": "Asia/Kolkata", "preferred_language": "hi",
      "emergency_contact": {"name": "Vikram Verma", "relationship": "spouse", "phone": "+919800000011"},
      "consents": {"gdpr": True, "hipaa": True, "data_sharing": False}}),
    ("demo2", "Second Demo Clinic", "demo2.carebase.local", "Europe/Berlin",
     {"given_name": "Ravi", "family_name": "Kumar", "birth_date": date(1979, 11, 3), "gender": "M",
      "phone": "+919800000002", "email": "patient@demo2.carebase.local", "mrn": "DEMO2-0001", "country": "DE",
      "timezone": "Europe/Berlin", "preferred_language": "en",
      "consents": {"gdpr": True, "hipaa": False, "data_sharing": False}}),
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
        created += await _seed_providers(session, admin, slug, accounts["doctor"].id)
        created += await _seed_schedule(session, admin, slug, accounts["doctor"].id, patient["mrn"])
        created += await _seed_chart(session, Principal.of(accounts["doctor"].id, tenant.id, ["doctor"]),
                                     patient["mrn"], tz)
        created += await _seed_consultation(session, Principal.of(accounts["patient"].id, tenant.id, ["patient"]))
        created += await _seed_pharmacy(session, Principal.of(accounts["pharmacist"].id, tenant.id, ["pharmacist"]),
                                        slug)
        created += await _seed_order(session, Principal.of(accounts["patient"].id, tenant.id, ["patient"]),
                                     tenant.id, patient)
        created += await _seed_paid_order(session, Principal.of(accounts["patient"].id, tenant.id, ["patient"]),
                                          tenant.id, patient)
        await set_context(session, tenant.id, None)
    return created


# slug -> the clinic's own dispensary: name, licence, address, point, currency
PHARMACIES = {
    "demo": ("Demo Clinic Pharmacy", "KA-BLR-20B-11827", "12 MG Road, Bengaluru 560001", "Bengaluru",
             12.9752, 77.6050, "INR"),
    "demo2": ("Second Demo Apotheke", "BE-APO-4471", "Friedrichstraße 100, 10117 Berlin", "Berlin",
              52.5200, 13.3880, "EUR"),
}
# name, generic, category, form, strength, pack size, MRP and price (minor units), stock, rx, schedule
DEMO_MEDICINES = (
    ("Crocin 500", "paracetamol", "Painkiller", "Tablet", "500 mg", 15, 3500, 3150, 120, False, None),
    ("Dolo 650", "paracetamol", "Painkiller", "Tablet", "650 mg", 15, 3400, 3000, 80, False, None),
    ("Calpol 500", "paracetamol", "Painkiller", "Tablet", "500 mg", 15, 3000, 2600, 60, False, None),
    ("Cetzine", "cetirizine", "Antihistamine", "Tablet", "10 mg", 10, 2200, 1900, 40, False, None),
    ("Okacet", "cetirizine", "Antihistamine", "Tablet", "10 mg", 10, 1800, 1500, 6, False, None),
    ("Mox 500", "amoxicillin", "Antibiotic", "Capsule", "500 mg", 10, 9000, 8200, 30, True, None),
    ("Azithral 500", "azithromycin", "Antibiotic", "Tablet", "500 mg", 3, 12000, 11000, 25, True, None),
    ("Amlong 5", "amlodipine", "Antihypertensive", "Tablet", "5 mg", 30, 6500, 5900, 50, True, None),
    ("Telma 40", "telmisartan", "Antihypertensive", "Tablet", "40 mg", 15, 21000, 19000, 35, True, None),
    ("Glycomet 500", "metformin", "Antidiabetic", "Tablet", "500 mg", 20, 3500, 3200, 70, True, None),
    ("Pan 40", "pantoprazole", "Antacid", "Tablet", "40 mg", 15, 15500, 14000, 45, True, None),
    ("Ibugesic 400", "ibuprofen", "Painkiller", "Tablet", "400 mg", 15, 2500, 2200, 4, False, None),
    ("Asthalin Inhaler", "salbutamol", "Bronchodilator", "Inhaler", "100 mcg", 1, 16000, 15000, 12, True, None),
    ("Alprax 0.25", "alprazolam", "Anxiolytic", "Tablet", "0.25 mg", 15, 4500, 4000, 20, True, "H1"),
    ("ORS Electral", "oral rehydration salts", "Rehydration", "Powder", "21.8 g", 1, 2300, 2100, 100, False, None),
)


async def _seed_pharmacy(session: AsyncSession, pharmacist: Principal, slug: str) -> list[str]:
    """The clinic's dispensary with a small catalogue (some of it low on stock, one controlled)."""
    name, licence, address, city, lat, lon, currency = PHARMACIES[slug]
    try:
        await pharmacy.own_pharmacy(session, pharmacist)
        return []
    except NotFound:
        pass
    week = {d: [["09:00", "21:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
    await pharmacy.save_pharmacy(session, pharmacist, name=name, licence_number=licence, address=address, city=city,
                                 lat=lat, lon=lon, opening_hours={**week, "sun": [["10:00", "14:00"]]},
                                 delivery_radius_km=8, delivery_fee_minor=4000 if currency == "INR" else 350,
                                 currency=currency, listed=True, phone=None)
    for (brand, generic, category, form, strength, pack, mrp, price, stock, rx, schedule) in DEMO_MEDICINES:
        await pharmacy.add_medicine(session, pharmacist, name=brand, generic_name=generic, category=category,
                                    manufacturer=None, description=None, dosage_form=form, strength=strength,
                                    pack_size=pack, mrp_minor=mrp, price_minor=price, currency=currency, stock=stock,
                                    low_stock_threshold=10, requires_prescription=rx, controlled_schedule=schedule,
                                    image_url=None, is_available=True)
    return [f"pharmacy {name} with {len(DEMO_MEDICINES)} medicines"]


async def _seed_order(session: AsyncSession, patient: Principal, pharmacy_id, details: dict) -> list[str]:
    """The demo patient's first order at their clinic's pharmacy: two packs of paracetamol, to pick up."""
    if await pharmacy.my_orders(session, patient, limit=1):
        return []
    found = await pharmacy.search_medicines(session, patient, q="paracetamol", pharmacy_id=pharmacy_id, limit=1)
    await pharmacy.add_to_cart(session, patient, found.items[0].id, 2)
    order = await pharmacy.checkout(session, patient, pharmacy_id=pharmacy_id, fulfilment="pickup",
                                    contact_name=f"{details['given_name']} {details['family_name']}",
                                    contact_phone=details["phone"])
    return [f"order {order.number}"]


async def _seed_paid_order(session: AsyncSession, patient: Principal, pharmacy_id, details: dict) -> list[str]:
    """The demo patient's wallet, topped up through the sandbox gateway (its hosted page and signed
    webhook, as a person would), and a delivery order paid from it: its money waits in escrow."""
    await set_context(session, patient.tenant_id, patient.account_id)
    if any(o.payment_method == "online" for o in await pharmacy.my_orders(session, patient)):
        return []
    currency = (await pharmacy.get_pharmacy(session, patient, pharmacy_id)).currency
    topped = await payments.top_up(session, patient, amount_minor=100_000 if currency == "INR" else 5_000,
                                   currency=currency)
    await payments.sandbox_settle(session, topped.provider_ref, "pay")
    await set_context(session, patient.tenant_id, patient.account_id)
    found = await pharmacy.search_medicines(session, patient, q="cetirizine", pharmacy_id=pharmacy_id, limit=1)
    await pharmacy.add_to_cart(session, patient, found.items[0].id, 1)
    order = await pharmacy.checkout(session, patient, pharmacy_id=pharmacy_id, fulfilment="delivery",
                                    contact_name=f"{details['given_name']} {details['family_name']}",
                                    contact_phone=details["phone"], delivery_address="4 Park Street",
                                    payment_method="online")
    await payments.create_intent(session, patient, purpose="order", reference_id=order.id, use_wallet=True)
    return [f"wallet top-up and order {order.number} paid from it"]


# slug -> directory entries; the first of each clinic is the demo doctor's own (linked to the login).
# NPIs are made-up numbers with a valid check digit; "verify" entries are verified by the demo admin.
PROVIDERS = {
    "demo": (
        {"npi": "1047293117", "license_number": "KMC-48213", "given_name": "Meera", "family_name": "Iyer",
         "specialty": "Cardiology", "sub_specialty": "Interventional Cardiology",
         "practice_name": "Demo Clinic Heart Centre", "country": "IN", "state_province": "Karnataka",
         "city": "Bengaluru", "email": "doctor@demo.carebase.local", "phone": "+918040000001",
         "languages": ["en", "hi", "kn"],
         "education": [{"institution": "AIIMS New Delhi", "degree": "MBBS", "year": 2004},
                       {"institution": "AIIMS New Delhi", "degree": "DM Cardiology", "year": 2011}],
         "certifications": [{"name": "Fellow, Cardiological Society of India", "issuer": "CSI", "year": 2014}],
         "telemedicine_enabled": True, "verify": True},
        {"npi": "1152087346", "license_number": "KMC-51877", "given_name": "Arjun", "family_name": "Mehta",
         "specialty": "Pediatrics", "practice_name": "Demo Clinic Children's Wing", "country": "IN",
         "state_province": "Karnataka", "city": "Bengaluru", "languages": ["en", "hi", "gu"],
         "education": [{"institution": "Grant Medical College", "degree": "MBBS", "year": 2009}],
         "verify": True},
        {"npi": "1269345025", "license_number": "MMC-2019-3310", "given_name": "Fatima", "family_name": "Khan",
         "specialty": "Dermatology", "country": "IN", "state_province": "Maharashtra", "city": "Mumbai",
         "languages": ["en", "hi", "ur"], "accepts_new_patients": False, "telemedicine_enabled": True},
        {"npi": "1380462170", "given_name": "Rahul", "family_name": "Nair", "specialty": "Family Medicine",
         "country": "IN", "state_province": "Kerala", "city": "Kochi", "languages": ["en", "ml"],
         "telemedicine_enabled": True},
    ),
    "demo2": (
        {"npi": "1493576080", "license_number": "AEKB-77120", "given_name": "Lena", "family_name": "Fischer",
         "specialty": "Neurology", "practice_name": "Second Demo Clinic Neurology", "country": "DE",
         "state_province": "Berlin", "city": "Berlin", "languages": ["de", "en"],
         "certifications": [{"name": "Facharzt für Neurologie", "issuer": "Ärztekammer Berlin", "year": 2015}],
         "telemedicine_enabled": True, "verify": True},
    ),
}


async def _seed_providers(session: AsyncSession, admin: Principal, slug: str, doctor_account_id) -> list[str]:
    created = []
    for i, entry in enumerate(PROVIDERS.get(slug, ())):
        values = {k: v for k, v in entry.items() if k != "verify"}
        provider = await providers.provider_by_npi(session, admin, values["npi"])
        if provider is None:
            provider = await providers.register_provider(
                session, admin, account_id=doctor_account_id if i == 0 else None, **values)
            created.append(f"provider {values['npi']}")
        if entry.get("verify") and not provider.verified:
            await providers.verify_provider(session, admin, provider.id)
    return created


async def _seed_schedule(session: AsyncSession, admin: Principal, slug: str, doctor_account_id,
                         mrn: str) -> list[str]:
    """The demo doctor sees patients on weekdays 09:00-13:00 and 14:00-17:00 at the main location,
    is away on the coming 25-26 December, and has one visit booked with the demo patient."""
    provider = await providers.provider_of_account(session, admin, doctor_account_id)
    location = (await tenants.list_locations(session, admin))[0]
    if provider is None or await scheduling.get_availability(session, admin, provider.id, location.id):
        return []
    windows = [{"weekday": d, "starts": time(s), "ends": time(e), "slot_minutes": 15}
               for d in range(5) for s, e in ((9, 13), (14, 17))]
    await scheduling.set_availability(session, admin, provider.id, location_id=location.id, windows=windows)
    tz = ZoneInfo(location.timezone)
    today = datetime.now(tz).date()
    christmas = date(today.year if (today.month, today.day) < (12, 25) else today.year + 1, 12, 25)
    await scheduling.add_exception(session, admin, provider.id, reason="Public holiday",
                                   starts_at=datetime.combine(christmas, time(0), tzinfo=tz),
                                   ends_at=datetime.combine(christmas + timedelta(days=2), time(0), tzinfo=tz))
    slots = await scheduling.free_slots(session, admin, provider.id, location_id=location.id,
                                        start=today + timedelta(days=1), days=7)
    patient = (await patients.search_patients(session, admin, q=mrn, limit=1, purpose="operations"))[0]
    await scheduling.book(session, admin, patient_id=patient.id, provider_id=provider.id, location_id=location.id,
                          type="office_visit", starts_at=slots[4].starts_at, reason_for_visit="Annual check-up")
    return [f"schedule of provider {provider.npi}"]


DEMO_CONSULTATION = ["I have had a sore throat and a runny nose, and I keep sneezing.",
                     "It started three days ago and is about the same.", "About 4 out of 10.",
                     "A mild fever yesterday evening, no rash. Warm drinks help.",
                     "Paracetamol 500 mg twice yesterday, it helped a bit.", "No, I am not short of breath.",
                     "No ear pain.", "No, nothing like that.", "Temperature 37.8 this morning.", "No."]


async def _seed_consultation(session: AsyncSession, patient: Principal) -> list[str]:
    """One completed intake with the offline assistant, waiting in the doctors' queue."""
    if await consult.mine(session, patient, limit=1):
        return []
    engine = consult.OfflineEngine()  # the demo never calls a remote model, whatever is configured
    c = await consult.start(session, patient, DEMO_CONSULTATION[0], engine=engine)
    for answer in DEMO_CONSULTATION[1:]:
        if c.status != "active":
            break
        c = await consult.say(session, patient, c.id, answer, engine=engine)
    return ["a completed consultation"]


async def _seed_chart(session: AsyncSession, doctor: Principal, mrn: str, tz: str) -> list[str]:
    """One past visit on the demo patient's chart, recorded and signed by the demo doctor."""
    patient = (await patients.search_patients(session, doctor, q=mrn, limit=1, purpose="operations"))[0]
    if (await encounters.chart(session, doctor, patient.id))["encounters"]:
        return []
    when = datetime.now(ZoneInfo(tz)).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=30)
    await encounters.record_encounter(
        session, doctor, patient.id, type="office_visit", occurred_at=when,
        chief_complaint="Routine check-up; occasional headaches", diagnoses=["I10"], procedures=["99213"],
        vitals={"systolic_mmhg": 142, "diastolic_mmhg": 90, "heart_rate_bpm": 74, "temperature_c": 36.7,
                "weight_kg": 68.0, "height_cm": 162},
        allergies=[{"substance": "Penicillin", "reaction": "rash", "severity": "moderate"}],
        problems=[{"name": "Hypertension", "status": "active"}],
        medications=[{"name": "Amlodipine", "dose": "5 mg", "frequency": "once daily"}],
        lab_results=[], treatment_plan="Start amlodipine; reduce salt.",
        follow_up_instructions="Blood pressure check in 4 weeks.", note="Stage 2 hypertension.")
    created = [f"encounter for {mrn}"]
    await messaging.send(session, doctor, patient_id=patient.id, client_message_id="demo-welcome",
                         body="Welcome! Write to me here with any question about your blood pressure or "
                              "your tablets. — your care team")
    return [*created, f"conversation with {mrn}"]
