"""The pharmacy marketplace: a pharmacy's profile, medicines and stock; patients' search, cart,
prescription-checked checkout and orders; the order's state machine.

Rules kept here:
* **Stock** is packs on the shelf (``stock``), of which ``reserved`` are held by open orders.
  Checkout reserves every line in one statement per line that succeeds only while enough is
  free (``pharmacy_reserve``), so concurrent buyers can never oversell; cancel, reject and expiry
  release; completion takes the units off the shelf (a ``sold`` stock event). Every other change
  of stock is a stock event with its reason.
* **Prescriptions**: a prescription-only or controlled medicine needs the buyer's own approved,
  patient-signed prescription with a valid signature (``prescribing.service.for_dispensing``),
  naming that generic, within its validity, and for no more packs than it covers less what the
  buyer's other orders from it already took. Controlled medicines are dispensed once per
  prescription and within 30 days of signing.
* **Orders** move only along ``TRANSITIONS``, each move by whom it may be made.
"""

from __future__ import annotations

import math
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.knowledge import service as knowledge
from carebase.notifications import service as notifications
from carebase.payments import service as payments
from carebase.pharmacy import couriers
from carebase.pharmacy.models import (
    IDENTITY,
    ORDER_NUMBERS,
    cart_items,
    delivery_otps,
    medicine_words,
    order_events,
    order_items,
    orders,
    pharmacies,
    pharmacy_medicines,
    stock_events,
)
from carebase.platform import crypto, jobs, numbering, realtime
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.db import set_context
from carebase.platform.errors import Conflict, NotFound, TooManyRequests, ValidationFailed
from carebase.platform.ids import new_id
from carebase.prescribing import service as prescribing
from carebase.settings import get_settings
from carebase.tenants import service as tenants

realtime.topic("orders", "manage:own_orders")

MAX_PAGE = 100
LIVE_SUBSCRIPTIONS = ("trial", "active", "cancelled")
TRIAL_DAYS = 30
RX_VALID_DAYS = 180  # a prescription-only medicine from a prescription at most this old
CONTROLLED_VALID_DAYS = 30  # a controlled one: sooner, and once
UNPAID_ORDER_MINUTES = 30  # an unpaid online order holds its stock this long
STOCK_REASONS = {"received": 1, "returned": 1, "sold": -1, "expired": -1, "adjusted": 0}  # sign of the change

# status -> {next status: who may move it there}
TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "placed": {"confirmed": frozenset({"pharmacy"}), "rejected": frozenset({"pharmacy"}),
               "cancelled": frozenset({"patient"}), "expired": frozenset({"system"})},
    "confirmed": {"packed": frozenset({"pharmacy"}), "rejected": frozenset({"pharmacy"}),
                  "cancelled": frozenset({"patient"}), "expired": frozenset({"system"})},
    "packed": {"shipped": frozenset({"pharmacy", "courier"}), "completed": frozenset({"pharmacy"})},
    "shipped": {"out_for_delivery": frozenset({"pharmacy", "courier"})},
    "out_for_delivery": {"delivered": frozenset({"pharmacy", "courier"})},
    "delivered": {"completed": frozenset({"pharmacy", "system"})},
}
RELEASING = frozenset({"rejected", "cancelled", "expired"})
CLOSED = frozenset({"completed", *RELEASING})
STATUS_TEXT = {"placed": "placed", "confirmed": "confirmed by the pharmacy", "packed": "packed",
               "shipped": "shipped", "out_for_delivery": "out for delivery", "delivered": "delivered",
               "completed": "completed", "rejected": "rejected by the pharmacy", "cancelled": "cancelled",
               "expired": "cancelled (not paid in time)"}


# -- pharmacies ----------------------------------------------------------------------------------


@dataclass
class Pharmacy:
    tenant_id: uuid.UUID
    name: str
    licence_number: str
    phone: str | None
    address: str
    city: str | None
    lat: float
    lon: float
    opening_hours: dict[str, list[list[str]]]
    delivery_radius_km: float
    delivery_fee_minor: int
    currency: str
    listed: bool
    subscription_status: str
    subscription_ends_at: datetime | None
    subscription_grace_until: datetime | None
    version: int
    distance_km: float | None = None

    @property
    def id(self) -> uuid.UUID:
        return self.tenant_id

    @property
    def taking_orders(self) -> bool:
        return self.listed and subscription_live(self.subscription_status, self.subscription_ends_at,
                                                 grace_until=self.subscription_grace_until)


def subscription_live(status: str, ends_at: datetime | None, now: datetime | None = None, *,
                      grace_until: datetime | None = None) -> bool:
    """Listed and taking orders: a trial, an active or a cancelled subscription until its period
    ends, an unpaid renewal until its grace ends (pharmacy/subscriptions.py)."""
    now = now or datetime.now(UTC)
    if status == "past_due":
        return grace_until is not None and grace_until > now
    return status in LIVE_SUBSCRIPTIONS and (ends_at is None or ends_at > now)


def _live_sql():
    return and_(pharmacies.c.listed, or_(
        and_(pharmacies.c.subscription_status.in_(LIVE_SUBSCRIPTIONS),
             or_(pharmacies.c.subscription_ends_at.is_(None), pharmacies.c.subscription_ends_at > func.now())),
        and_(pharmacies.c.subscription_status == "past_due", pharmacies.c.subscription_grace_until > func.now())))


_PHARMACY_FIELDS = tuple(f for f in Pharmacy.__dataclass_fields__ if f != "distance_km")


def _pharmacy(r, distance: float | None = None) -> Pharmacy:
    m = r._mapping
    p = Pharmacy(**{k: m[k] for k in _PHARMACY_FIELDS})
    p.delivery_radius_km = float(p.delivery_radius_km)
    p.distance_km = round(distance, 2) if distance is not None else None
    return p


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


def _check_hours(hours: dict[str, Any]) -> dict[str, list[list[str]]]:
    out = {}
    for day, spans in (hours or {}).items():
        if day not in _DAYS:
            raise ValidationFailed(f"Opening hours: {day!r} is not a day (use {', '.join(_DAYS)}).", code="bad-hours")
        clean = []
        for span in spans or []:
            if (not isinstance(span, list | tuple) or len(span) != 2
                    or not all(isinstance(t, str) and _HHMM.match(t) for t in span) or span[0] >= span[1]):
                raise ValidationFailed(f"Opening hours for {day}: each span is [\"HH:MM\", \"HH:MM\"], opening "
                                       "before closing.", code="bad-hours")
            clean.append([span[0], span[1]])
        out[day] = clean
    return out


async def save_pharmacy(session: AsyncSession, principal: Principal, *, expected_version: int | None = None,
                        **fields: Any) -> Pharmacy:
    """Create or update the caller's pharmacy profile (the organization's shop front)."""
    require(principal, "manage:own_inventory")
    tenant_id = require_tenant(principal)
    if "opening_hours" in fields:
        fields["opening_hours"] = _check_hours(fields["opening_hours"])
    current = (await session.execute(select(pharmacies).where(pharmacies.c.tenant_id == tenant_id)
                                     .with_for_update())).first()
    if current is None:
        missing = [f for f in ("name", "licence_number", "address", "lat", "lon") if fields.get(f) is None]
        if missing:
            raise ValidationFailed(f"A new pharmacy needs {', '.join(missing)}.", code="pharmacy-incomplete")
        values = {"opening_hours": {}, "delivery_radius_km": 5, "delivery_fee_minor": 0, "currency": "INR",
                  "listed": True, **{k: v for k, v in fields.items() if v is not None}}
        await session.execute(pharmacies.insert().values(
            tenant_id=tenant_id, subscription_status="trial", version=1,
            subscription_ends_at=datetime.now(UTC) + timedelta(days=TRIAL_DAYS), **values))
    else:
        if expected_version is not None and expected_version != current.version:
            raise Conflict("The profile changed since you read it: reload and try again.", code="version-mismatch")
        await session.execute(pharmacies.update().where(pharmacies.c.tenant_id == tenant_id).values(
            **fields, version=current.version + 1, updated_at=func.now()))
    return await own_pharmacy(session, principal)


async def own_pharmacy(session: AsyncSession, principal: Principal) -> Pharmacy:
    require(principal, "manage:own_inventory")
    tenant_id = require_tenant(principal)
    row = (await session.execute(select(pharmacies).where(pharmacies.c.tenant_id == tenant_id))).first()
    if row is None:
        raise NotFound("This organization has no pharmacy profile yet: create one first.", code="no-pharmacy")
    return _pharmacy(row)


def _distance_sql(lat: float, lon: float):
    """Great-circle distance in km (haversine): exact enough for 'nearest pharmacy'."""
    return 6371.0 * 2 * func.asin(func.sqrt(
        func.power(func.sin(func.radians(pharmacies.c.lat - lat) / 2), 2)
        + func.cos(func.radians(lat)) * func.cos(func.radians(pharmacies.c.lat))
        * func.power(func.sin(func.radians(pharmacies.c.lon - lon) / 2), 2)))


def _near(lat: float, lon: float, radius_km: float):
    """A box around the point (uses the lat/lon index), then the distance itself."""
    dlat = radius_km / 111.0
    dlon = radius_km / max(111.0 * math.cos(math.radians(lat)), 0.01)
    distance = _distance_sql(lat, lon)
    return distance, and_(pharmacies.c.lat.between(lat - dlat, lat + dlat),
                          pharmacies.c.lon.between(lon - dlon, lon + dlon), distance <= radius_km)


async def nearby(session: AsyncSession, principal: Principal, *, lat: float, lon: float, radius_km: float = 10,
                 limit: int = 50) -> list[Pharmacy]:
    """Pharmacies taking orders within ``radius_km``, nearest first."""
    require(principal, "read:pharmacies")
    distance, near = _near(lat, lon, radius_km)
    rows = (await session.execute(select(pharmacies, distance.label("distance")).where(near, _live_sql())
                                  .order_by(distance, pharmacies.c.name).limit(limit))).all()
    return [_pharmacy(r, r.distance) for r in rows]


async def pharmacy_of_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Pharmacy | None:
    """The organization's own pharmacy when it runs one that takes orders (a clinic's dispensary:
    where its patients shop first)."""
    row = (await session.execute(select(pharmacies).where(pharmacies.c.tenant_id == tenant_id, _live_sql()))).first()
    return _pharmacy(row) if row else None


async def get_pharmacy(session: AsyncSession, principal: Principal, pharmacy_id: uuid.UUID) -> Pharmacy:
    require(principal, "read:pharmacies")
    row = (await session.execute(select(pharmacies).where(pharmacies.c.tenant_id == pharmacy_id, _live_sql()))).first()
    if row is None:
        raise NotFound("No such pharmacy taking orders.", code="pharmacy-not-found")
    return _pharmacy(row)


# -- medicines -----------------------------------------------------------------------------------


@dataclass
class Medicine:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    generic_name: str | None
    generic_key: str | None
    category: str
    manufacturer: str | None
    description: str | None
    dosage_form: str | None
    strength: str | None
    pack_size: int | None
    mrp_minor: int
    price_minor: int
    currency: str
    stock: int
    reserved: int
    low_stock_threshold: int
    requires_prescription: bool
    controlled_schedule: str | None
    image_url: str | None
    is_available: bool
    version: int
    pharmacy_name: str | None = None
    distance_km: float | None = None

    @property
    def pharmacy_id(self) -> uuid.UUID:
        return self.tenant_id

    @property
    def available(self) -> int:
        return max(self.stock - self.reserved, 0)

    @property
    def discount_minor(self) -> int:
        return self.mrp_minor - self.price_minor

    @property
    def needs_prescription(self) -> bool:
        return self.requires_prescription or self.controlled_schedule is not None


_MEDICINE_FIELDS = tuple(f for f in Medicine.__dataclass_fields__ if f not in ("pharmacy_name", "distance_km"))
MEDICINE_INPUT = ("name", "generic_name", "category", "manufacturer", "description", "dosage_form", "strength",
                  "pack_size", "mrp_minor", "price_minor", "currency", "low_stock_threshold",
                  "requires_prescription", "controlled_schedule", "image_url", "is_available")


def _medicine(r) -> Medicine:
    m = r._mapping
    med = Medicine(**{k: m[k] for k in _MEDICINE_FIELDS})
    med.pharmacy_name = m.get("pharmacy_name")
    d = m.get("distance")
    med.distance_km = round(d, 2) if d is not None else None
    return med


def generic_key(generic_name: str | None, name: str) -> str | None:
    """The knowledge base's generic for a product (by its generic name, else its own name)."""
    for candidate in (generic_name, name):
        if candidate:
            med = knowledge.medicine(candidate)
            if med:
                return med.generic
    return generic_name.strip().casefold() if generic_name else None


def check_medicine(values: dict[str, Any]) -> None:
    """Rules every door shares (the API's schema, the CSV import)."""
    if values["price_minor"] > values["mrp_minor"]:
        raise ValidationFailed("The selling price cannot be above the MRP.", code="price-above-mrp",
                               errors=[{"loc": ["body", "price_minor"], "type": "price-above-mrp",
                                        "msg": "The selling price cannot be above the MRP."}])


_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text_: str | None) -> list[str]:
    return _WORD.findall((text_ or "").casefold())


def trigrams(word: str) -> list[str]:
    padded = f"  {word} "
    return sorted({padded[i:i + 3] for i in range(len(padded) - 2)})


async def remember_words(session: AsyncSession, names: list[str]) -> None:
    """Add the words of these names to the vocabulary that search corrects typos against."""
    words = sorted({w for n in names for w in _tokens(n) if 3 <= len(w) <= 100 and not w.isdigit()})
    if words:
        await session.execute(insert(medicine_words).values([{"word": w, "trigrams": trigrams(w)} for w in words])
                              .on_conflict_do_nothing())


async def _load_medicine(session: AsyncSession, medicine_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None,
                         lock: bool = False) -> Medicine:
    stmt = select(pharmacy_medicines).where(pharmacy_medicines.c.id == medicine_id,
                                            pharmacy_medicines.c.deleted_at.is_(None))
    if tenant_id is not None:
        stmt = stmt.where(pharmacy_medicines.c.tenant_id == tenant_id)
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise NotFound("No such medicine.", code="medicine-not-found")
    return _medicine(row)


async def _check_unique(session: AsyncSession, tenant_id: uuid.UUID, values: dict[str, Any],
                        medicine_id: uuid.UUID | None = None) -> None:
    stmt = select(pharmacy_medicines.c.id).where(
        pharmacy_medicines.c.tenant_id == tenant_id, pharmacy_medicines.c.deleted_at.is_(None),
        *(e == (values.get(k) or "").casefold() for e, k in zip(
            IDENTITY, ("name", "strength", "dosage_form", "manufacturer"), strict=True)))
    if medicine_id is not None:
        stmt = stmt.where(pharmacy_medicines.c.id != medicine_id)
    same = (await session.execute(stmt)).first()
    if same:
        raise Conflict(f"{values['name']} ({values.get('strength') or 'no strength'}, "
                       f"{values.get('dosage_form') or 'no form'}) is already in your catalogue.",
                       code="medicine-exists", medicine_id=str(same.id))


async def add_medicine(session: AsyncSession, principal: Principal, *, stock: int = 0, **values: Any) -> Medicine:
    require(principal, "manage:own_inventory")
    tenant_id = require_tenant(principal)
    await own_pharmacy(session, principal)
    check_medicine(values)
    await _check_unique(session, tenant_id, values)
    medicine_id = new_id()
    await session.execute(pharmacy_medicines.insert().values(
        id=medicine_id, tenant_id=tenant_id, stock=0, reserved=0, version=1,
        generic_key=generic_key(values.get("generic_name"), values["name"]), **values))
    await remember_words(session, [values["name"], values.get("generic_name") or ""])
    if stock:
        await _stock_event(session, principal, medicine_id, stock, "received", note="opening stock")
    return await _load_medicine(session, medicine_id)


async def update_medicine(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID, *,
                          expected_version: int | None = None, **values: Any) -> Medicine:
    require(principal, "manage:own_inventory")
    tenant_id = require_tenant(principal)
    current = await _load_medicine(session, medicine_id, tenant_id=tenant_id, lock=True)
    if expected_version is not None and expected_version != current.version:
        raise Conflict("This medicine changed since you read it: reload and try again.", code="version-mismatch")
    check_medicine(values)
    await _check_unique(session, tenant_id, values, medicine_id)
    await session.execute(pharmacy_medicines.update().where(pharmacy_medicines.c.id == medicine_id).values(
        **values, generic_key=generic_key(values.get("generic_name"), values["name"]),
        version=current.version + 1, updated_at=func.now()))
    await remember_words(session, [values["name"], values.get("generic_name") or ""])
    return await _load_medicine(session, medicine_id)


async def delete_medicine(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID) -> None:
    """Take a medicine off the catalogue (orders keep their lines); refused while orders hold it."""
    require(principal, "manage:own_inventory")
    current = await _load_medicine(session, medicine_id, tenant_id=require_tenant(principal), lock=True)
    if current.reserved:
        raise Conflict(f"{current.reserved} pack(s) of {current.name} are held by open orders: finish or reject "
                       "them first.", code="medicine-reserved")
    await session.execute(pharmacy_medicines.update().where(pharmacy_medicines.c.id == medicine_id)
                          .values(deleted_at=func.now(), is_available=False, updated_at=func.now()))
    await session.execute(delete(cart_items).where(cart_items.c.medicine_id == medicine_id))


async def get_medicine(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID) -> Medicine:
    """A pharmacy's own medicine (staff), or any listed one (patients)."""
    if principal.can("manage:own_inventory"):
        return await _load_medicine(session, medicine_id, tenant_id=require_tenant(principal))
    require(principal, "read:pharmacies")
    row = (await session.execute(_listed_medicines().where(pharmacy_medicines.c.id == medicine_id))).first()
    if row is None:
        raise NotFound("No such medicine.", code="medicine-not-found")
    return _medicine(row)


async def list_medicines(session: AsyncSession, principal: Principal, *, low_stock: bool = False, q: str | None = None,
                         limit: int = 50, offset: int = 0) -> list[Medicine]:
    """The caller's pharmacy's catalogue by name; ``low_stock``: only what is at or below its
    threshold (free units, not counting what orders hold), fewest first; ``q``: names starting so."""
    require(principal, "manage:own_inventory")
    stmt = select(pharmacy_medicines).where(pharmacy_medicines.c.tenant_id == require_tenant(principal),
                                            pharmacy_medicines.c.deleted_at.is_(None))
    if q and q.strip():
        stmt = stmt.where(func.lower(pharmacy_medicines.c.name).startswith(q.strip().casefold(), autoescape=True))
    free = pharmacy_medicines.c.stock - pharmacy_medicines.c.reserved
    if low_stock:
        stmt = stmt.where(free <= pharmacy_medicines.c.low_stock_threshold).order_by(free, pharmacy_medicines.c.name)
    else:
        stmt = stmt.order_by(pharmacy_medicines.c.name, pharmacy_medicines.c.id)
    return [_medicine(r) for r in (await session.execute(stmt.limit(limit).offset(offset))).all()]


# -- stock ---------------------------------------------------------------------------------------


@dataclass
class StockEvent:
    id: int
    medicine_id: uuid.UUID
    change: int
    reason: str
    stock_after: int
    order_id: uuid.UUID | None
    note: str | None
    actor_id: uuid.UUID | None
    at: datetime


async def _stock_event(session: AsyncSession, principal: Principal | None, medicine_id: uuid.UUID, change: int,
                       reason: str, *, note: str | None = None, order_id: uuid.UUID | None = None,
                       release: int = 0) -> int:
    """Apply a stock change and record it; ``release`` units of the change were held by an order."""
    row = (await session.execute(
        update(pharmacy_medicines).where(pharmacy_medicines.c.id == medicine_id)
        .values(stock=pharmacy_medicines.c.stock + change, reserved=pharmacy_medicines.c.reserved - release,
                updated_at=func.now())
        .returning(pharmacy_medicines.c.tenant_id, pharmacy_medicines.c.stock, pharmacy_medicines.c.reserved,
                   pharmacy_medicines.c.low_stock_threshold))).one()
    await session.execute(stock_events.insert().values(
        tenant_id=row.tenant_id, medicine_id=medicine_id, change=change, reason=reason, stock_after=row.stock,
        order_id=order_id, note=note, actor_id=principal.account_id if principal else None))
    if change < 0 and row.stock - row.reserved <= row.low_stock_threshold < row.stock - row.reserved - change:
        await jobs.defer(session, "pharmacy.low_stock_alert", tenant_id=str(row.tenant_id),
                         medicine_id=str(medicine_id))
    return row.stock


async def change_stock(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID, *, reason: str,
                       change: int | None = None, set_to: int | None = None, note: str | None = None) -> Medicine:
    """``PATCH …/stock``: by ``change`` (received and returned add, sold and expired take away,
    adjusted either way) or ``set_to`` a counted quantity (an adjustment)."""
    require(principal, "manage:own_inventory")
    if reason not in STOCK_REASONS:
        raise ValidationFailed(f"reason must be one of {', '.join(STOCK_REASONS)}.", code="bad-stock-reason")
    if (change is None) == (set_to is None):
        raise ValidationFailed("Give either change or set_to.", code="bad-stock-change")
    current = await _load_medicine(session, medicine_id, tenant_id=require_tenant(principal), lock=True)
    if set_to is not None:
        if reason != "adjusted":
            raise ValidationFailed("set_to is a count: its reason is 'adjusted'.", code="bad-stock-reason")
        change = set_to - current.stock
    sign = STOCK_REASONS[reason]
    if change == 0 and set_to is None or sign and change * sign <= 0:
        raise ValidationFailed(f"A '{reason}' change must be {'positive' if sign > 0 else 'negative'}."
                               if sign else "An adjustment must change something.", code="bad-stock-change")
    if current.stock + change < current.reserved:
        raise Conflict(f"Only {current.available} pack(s) of {current.name} are free ({current.reserved} are held "
                       "by open orders): stock cannot go below that.", code="stock-below-reserved")
    if change:
        await _stock_event(session, principal, medicine_id, change, reason, note=note)
    return await _load_medicine(session, medicine_id)


async def stock_history(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID,
                        limit: int = 100) -> list[StockEvent]:
    require(principal, "manage:own_inventory")
    await _load_medicine(session, medicine_id, tenant_id=require_tenant(principal))
    rows = (await session.execute(select(stock_events).where(stock_events.c.medicine_id == medicine_id)
                                  .order_by(stock_events.c.id.desc()).limit(limit))).all()
    return [StockEvent(r.id, r.medicine_id, r.change, r.reason, r.stock_after, r.order_id, r.note, r.actor_id, r.at)
            for r in rows]


# -- search --------------------------------------------------------------------------------------


def _listed_medicines(distance=None):
    cols = [pharmacy_medicines, pharmacies.c.name.label("pharmacy_name")]
    if distance is not None:
        cols.append(distance.label("distance"))
    return (select(*cols).join(pharmacies, pharmacies.c.tenant_id == pharmacy_medicines.c.tenant_id)
            .where(pharmacy_medicines.c.deleted_at.is_(None), pharmacy_medicines.c.is_available, _live_sql()))


def _edit_distance(a: str, b: str, cap: int) -> int:
    """Levenshtein distance, giving up (cap + 1) once it must exceed ``cap``."""
    if abs(len(a) - len(b)) > cap:
        return cap + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > cap:
            return cap + 1
        previous = current
    return previous[-1]


async def _correct(session: AsyncSession, word: str) -> str:
    """The word itself when some medicine name has a word starting with it; else the nearest
    known word (by shared trigrams, then edit distance: 1 for short words, 2 for longer)."""
    if len(word) < 3 or word.isdigit():
        return word
    known = (await session.execute(select(literal(1)).select_from(medicine_words)
                                   .where(medicine_words.c.word.startswith(word, autoescape=True)).limit(1))).first()
    if known:
        return word
    rows = (await session.execute(text(
        "SELECT word, (SELECT count(*) FROM unnest(trigrams) t WHERE t = ANY(CAST(:grams AS text[]))) AS shared "
        "FROM medicine_words WHERE trigrams && CAST(:grams AS text[]) ORDER BY shared DESC, word LIMIT 30"),
        {"grams": trigrams(word)})).all()
    cap = 1 if len(word) <= 4 else 2
    best = min(((_edit_distance(word, r.word, cap), -r.shared, r.word) for r in rows), default=None)
    return best[2] if best and best[0] <= cap else word


@dataclass
class SearchResult:
    items: list[Medicine]
    corrected: str | None  # the query as searched, when a typo was corrected


async def search_medicines(session: AsyncSession, principal: Principal, *, q: str | None = None,
                           category: str | None = None, dosage_form: str | None = None,
                           requires_prescription: bool | None = None, in_stock: bool | None = None,
                           pharmacy_id: uuid.UUID | None = None, lat: float | None = None, lon: float | None = None,
                           radius_km: float | None = None, limit: int = 20, offset: int = 0) -> SearchResult:
    """Listed medicines by name or generic name, typos corrected; filters combine. Best match
    first, then cheaper; with a location, only pharmacies within ``radius_km`` (default 10)."""
    require(principal, "read:pharmacies")
    distance = near = None
    if lat is not None and lon is not None:
        distance, near = _near(lat, lon, radius_km or 10)
    stmt = _listed_medicines(distance)
    if near is not None:
        # The pharmacies nearby first (a few dozen), then only their shelves: the planner can
        # then AND the full-text index with the pharmacy index instead of ranking every match.
        nearby_ids = list((await session.execute(select(pharmacies.c.tenant_id).where(near, _live_sql()))).scalars())
        if not nearby_ids:
            return SearchResult([], None)
        stmt = stmt.where(pharmacy_medicines.c.tenant_id.in_(nearby_ids))
    words = _tokens(q)[:8]
    corrected = None
    if words:
        fixed = [await _correct(session, w) for w in words]
        if fixed != words:
            corrected = " ".join(fixed)
        tsq = func.to_tsquery("simple", " & ".join(f"{w}:*" for w in fixed))
        stmt = stmt.where(pharmacy_medicines.c.search.bool_op("@@")(tsq))
        order = [func.ts_rank(pharmacy_medicines.c.search, tsq).desc()]
    else:
        order = [pharmacy_medicines.c.name]
    if pharmacy_id is not None:
        stmt = stmt.where(pharmacy_medicines.c.tenant_id == pharmacy_id)
    if category:
        stmt = stmt.where(func.lower(pharmacy_medicines.c.category) == category.casefold())
    if dosage_form:
        stmt = stmt.where(func.lower(pharmacy_medicines.c.dosage_form) == dosage_form.casefold())
    if requires_prescription is not None:
        rx = or_(pharmacy_medicines.c.requires_prescription, pharmacy_medicines.c.controlled_schedule.is_not(None))
        stmt = stmt.where(rx if requires_prescription else ~rx)
    if in_stock is not None:
        free = pharmacy_medicines.c.stock - pharmacy_medicines.c.reserved
        stmt = stmt.where(free > 0 if in_stock else free <= 0)
    order += [pharmacy_medicines.c.price_minor, pharmacy_medicines.c.id]
    rows = (await session.execute(stmt.order_by(*order).limit(limit).offset(offset))).all()
    return SearchResult([_medicine(r) for r in rows], corrected)


def _strength_key(strength: str | None) -> str:
    return re.sub(r"\s+", "", (strength or "").casefold())


async def alternatives(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID, *,
                       same_pharmacy: bool = False, limit: int = 20) -> list[Medicine]:
    """Other products with the same generic and strength, cheaper first (in stock before not)."""
    med = await get_medicine(session, principal, medicine_id)
    if not med.generic_key:
        return []
    stmt = _listed_medicines().where(
        pharmacy_medicines.c.generic_key == med.generic_key, pharmacy_medicines.c.id != med.id,
        func.lower(func.regexp_replace(func.coalesce(pharmacy_medicines.c.strength, ""), r"\s+", "", "g"))
        == _strength_key(med.strength))
    if same_pharmacy:
        stmt = stmt.where(pharmacy_medicines.c.tenant_id == med.tenant_id)
    free = pharmacy_medicines.c.stock - pharmacy_medicines.c.reserved
    rows = (await session.execute(stmt.order_by(pharmacy_medicines.c.price_minor, (free <= 0),
                                                pharmacy_medicines.c.id).limit(limit))).all()
    return [_medicine(r) for r in rows]


# -- cart ----------------------------------------------------------------------------------------


@dataclass
class CartLine:
    medicine: Medicine
    quantity: int
    prescription_id: uuid.UUID | None
    problem: str | None  # why it cannot be bought as it is (sold out, fewer left, no longer listed)

    @property
    def total_minor(self) -> int:
        return self.medicine.price_minor * self.quantity


@dataclass
class Cart:
    lines: list[CartLine] = field(default_factory=list)

    def at(self, pharmacy_id: uuid.UUID) -> list[CartLine]:
        return [line for line in self.lines if line.medicine.tenant_id == pharmacy_id]


MAX_QUANTITY = 1000


def _check_quantity(quantity: int) -> None:
    if not 1 <= quantity <= MAX_QUANTITY:
        raise ValidationFailed(f"A quantity is between 1 and {MAX_QUANTITY}.", code="bad-quantity")


async def cart(session: AsyncSession, principal: Principal) -> Cart:
    """The caller's cart with today's prices (a price may have changed since it was added)."""
    require(principal, "create:orders")
    rows = (await session.execute(
        select(cart_items.c.quantity, cart_items.c.prescription_id, pharmacy_medicines,
               pharmacies.c.name.label("pharmacy_name"), _live_sql().label("live"))
        .join(pharmacy_medicines, pharmacy_medicines.c.id == cart_items.c.medicine_id)
        .join(pharmacies, pharmacies.c.tenant_id == pharmacy_medicines.c.tenant_id)
        .where(cart_items.c.account_id == principal.account_id)
        .order_by(pharmacies.c.name, pharmacy_medicines.c.name))).all()
    lines = []
    for r in rows:
        med = _medicine(r)
        problem = None
        if not r.live or not med.is_available or r.deleted_at is not None:
            problem = "no longer sold here"
        elif med.available < r.quantity:
            problem = "sold out" if med.available == 0 else f"only {med.available} left"
        lines.append(CartLine(med, r.quantity, r.prescription_id, problem))
    return Cart(lines)


async def add_to_cart(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID, quantity: int, *,
                      prescription_id: uuid.UUID | None = None, replace: bool = False) -> Cart:
    require(principal, "create:orders")
    _check_quantity(quantity)
    row = (await session.execute(_listed_medicines().where(pharmacy_medicines.c.id == medicine_id))).first()
    if row is None:
        raise NotFound("No such medicine on sale.", code="medicine-not-found")
    stmt = insert(cart_items).values(account_id=principal.account_id, medicine_id=medicine_id,
                                     pharmacy_id=row.tenant_id, quantity=quantity, prescription_id=prescription_id)
    new_quantity = stmt.excluded.quantity if replace else func.least(cart_items.c.quantity + stmt.excluded.quantity,
                                                                     MAX_QUANTITY)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[cart_items.c.account_id, cart_items.c.medicine_id],
        set_={"quantity": new_quantity,
              "prescription_id": func.coalesce(stmt.excluded.prescription_id, cart_items.c.prescription_id)}))
    return await cart(session, principal)


async def set_cart_quantity(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID,
                            quantity: int) -> Cart:
    require(principal, "create:orders")
    _check_quantity(quantity)
    done = await session.execute(update(cart_items).where(cart_items.c.account_id == principal.account_id,
                                                          cart_items.c.medicine_id == medicine_id)
                                 .values(quantity=quantity))
    if not done.rowcount:
        raise NotFound("That medicine is not in your cart.", code="not-in-cart")
    return await cart(session, principal)


async def remove_from_cart(session: AsyncSession, principal: Principal, medicine_id: uuid.UUID) -> Cart:
    require(principal, "create:orders")
    await session.execute(delete(cart_items).where(cart_items.c.account_id == principal.account_id,
                                                   cart_items.c.medicine_id == medicine_id))
    return await cart(session, principal)


# -- what a prescription covers -------------------------------------------------------------------

_MASS = {"mcg": 0.001, "mg": 1.0, "g": 1000.0}
_STRENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mcg|mg|g)\b", re.I)


def units_prescribed(line: dict[str, Any], strength: str | None) -> int | None:
    """Units (tablets, capsules...) a prescription line covers: its quantity when the prescriber
    gave one, else doses (times a day x days) x units per dose (the dose over the product's
    strength, both masses); None when it cannot be known (then one pack)."""
    if line.get("quantity"):
        return int(line["quantity"])
    per_day, days = line.get("times_per_day"), line.get("duration_days")
    if not per_day or not days:
        return None
    per_dose = 1
    m = _STRENGTH.match(strength or "")
    if m and line.get("dose") and line.get("unit") in _MASS:
        each = float(m.group(1)) * _MASS[m.group(2).lower()]
        per_dose = max(1, math.ceil(line["dose"] * _MASS[line["unit"]] / each - 1e-9)) if each else 1
    return math.ceil(per_day * days - 1e-9) * per_dose


def packs_covered(line: dict[str, Any], med: Medicine) -> int:
    units = units_prescribed(line, med.strength)
    if units is None:
        return 1
    return math.ceil(units / med.pack_size) if med.pack_size else units


def _line_for(dispensable: prescribing.Dispensable, med: Medicine) -> dict[str, Any] | None:
    for line in dispensable.items:
        known = knowledge.medicine(line.get("medicine") or "")
        generic = known.generic if known else (line.get("medicine") or "").casefold()
        if med.generic_key and generic == med.generic_key:
            return line
    return None


async def _already_taken(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID,
                         generic: str) -> int:
    """Packs of ``generic`` the caller's live orders (at any pharmacy) already took from it."""
    return (await session.execute(
        select(func.coalesce(func.sum(order_items.c.quantity), 0))
        .join(orders, orders.c.id == order_items.c.order_id)
        .where(orders.c.prescription_id == prescription_id, orders.c.patient_account_id == principal.account_id,
               orders.c.status.not_in(RELEASING), order_items.c.generic_key == generic))).scalar()


async def fill_cart_from_prescription(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID,
                                      pharmacy_id: uuid.UUID) -> tuple[Cart, list[str]]:
    """Put each medicine of an approved prescription in the cart at ``pharmacy_id``: the
    cheapest product there with that generic (in stock first), as many packs as the prescription
    still covers. Returns the cart and the medicines the pharmacy does not sell."""
    require(principal, "create:orders")
    dispensable = await prescribing.for_dispensing(session, principal, prescription_id)
    await get_pharmacy(session, principal, pharmacy_id)
    missing = []
    for line in dispensable.items:
        known = knowledge.medicine(line.get("medicine") or "")
        generic = known.generic if known else (line.get("medicine") or "").casefold()
        free = pharmacy_medicines.c.stock - pharmacy_medicines.c.reserved
        row = (await session.execute(_listed_medicines().where(
            pharmacy_medicines.c.tenant_id == pharmacy_id, pharmacy_medicines.c.generic_key == generic)
            .order_by((free <= 0), pharmacy_medicines.c.price_minor, pharmacy_medicines.c.id).limit(1))).first()
        if row is None:
            missing.append(line.get("medicine") or "?")
            continue
        med = _medicine(row)
        packs = packs_covered(line, med) - await _already_taken(session, principal, prescription_id, generic)
        if packs <= 0:
            missing.append(f"{line.get('medicine')} (already ordered in full)")
            continue
        await add_to_cart(session, principal, med.id, min(packs, MAX_QUANTITY), prescription_id=prescription_id,
                          replace=True)
    return await cart(session, principal), missing


# -- orders --------------------------------------------------------------------------------------


@dataclass
class OrderItem:
    medicine_id: uuid.UUID
    name: str
    strength: str | None
    quantity: int
    unit_price_minor: int
    mrp_minor: int
    total_minor: int


@dataclass
class OrderEvent:
    status: str
    note: str | None
    actor: str
    at: datetime


@dataclass
class Order:
    id: uuid.UUID
    number: str
    pharmacy_id: uuid.UUID
    pharmacy_name: str
    patient_account_id: uuid.UUID
    contact_name: str
    contact_phone: str | None
    status: str
    fulfilment: str
    delivery_address: str | None
    prescription_id: uuid.UUID | None
    subtotal_minor: int
    discount_minor: int
    delivery_fee_minor: int
    total_minor: int
    currency: str
    payment_method: str
    payment_status: str
    expires_at: datetime | None
    notes: str | None
    reason: str | None
    courier: str | None
    courier_ref: str | None
    tracking_url: str | None
    placed_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    receipt_number: str | None
    version: int
    items: list[OrderItem] = field(default_factory=list)
    events: list[OrderEvent] = field(default_factory=list)

    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status]

    @property
    def next_statuses(self) -> list[str]:
        nxt = TRANSITIONS.get(self.status, {})
        return [s for s in nxt if _fits(self.fulfilment, self.status, s)]


def _fits(fulfilment: str, old: str, new: str) -> bool:
    """Pickup orders are collected once packed; delivery orders go through the courier's steps."""
    if old == "packed":
        return new == ("completed" if fulfilment == "pickup" else "shipped")
    return True


async def _order_row(session: AsyncSession, order_id: uuid.UUID, *, lock: bool = False):
    stmt = (select(orders, pharmacies.c.name.label("pharmacy_name"))
            .join(pharmacies, pharmacies.c.tenant_id == orders.c.tenant_id).where(orders.c.id == order_id))
    row = (await session.execute(stmt.with_for_update(of=orders) if lock else stmt)).first()
    if row is None:
        raise NotFound("No such order.", code="order-not-found")
    return row


async def _orders(session: AsyncSession, rows) -> list[Order]:
    """Orders with their lines and status history: two queries for any number of orders (the
    pharmacy's live queue reloads the whole list on every change)."""
    out = []
    for row in rows:
        m = row._mapping
        out.append(Order(**{k: m[k] for k in Order.__dataclass_fields__ if k not in ("pharmacy_id", "items", "events")},
                         pharmacy_id=row.tenant_id))
    if not out:
        return out
    by_id = {o.id: o for o in out}
    for r in (await session.execute(select(order_items).where(order_items.c.order_id.in_(by_id))
                                    .order_by(order_items.c.id))).all():
        by_id[r.order_id].items.append(OrderItem(r.medicine_id, r.name, r.strength, r.quantity, r.unit_price_minor,
                                                 r.mrp_minor, r.total_minor))
    for r in (await session.execute(select(order_events).where(order_events.c.order_id.in_(by_id))
                                    .order_by(order_events.c.id))).all():
        by_id[r.order_id].events.append(OrderEvent(r.status, r.note, r.actor, r.at))
    return out


async def _order(session: AsyncSession, row) -> Order:
    return (await _orders(session, [row]))[0]


def _visible_to(principal: Principal, row) -> str:
    """'pharmacy' or 'patient': how the caller relates to the order (else it does not exist for them)."""
    if principal.tenant_id == row.tenant_id and principal.can("manage:own_orders"):
        return "pharmacy"
    if row.patient_account_id == principal.account_id and principal.can("create:orders"):
        return "patient"
    raise NotFound("No such order.", code="order-not-found")


async def get_order(session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> Order:
    row = await _order_row(session, order_id)
    _visible_to(principal, row)
    return await _order(session, row)


async def my_orders(session: AsyncSession, principal: Principal, *, limit: int = 50) -> list[Order]:
    require(principal, "create:orders")
    rows = (await session.execute(
        select(orders, pharmacies.c.name.label("pharmacy_name"))
        .join(pharmacies, pharmacies.c.tenant_id == orders.c.tenant_id)
        .where(orders.c.patient_account_id == principal.account_id)
        .order_by(orders.c.placed_at.desc()).limit(limit))).all()
    return await _orders(session, rows)


async def pharmacy_orders(session: AsyncSession, principal: Principal, *, status: str | None = None,
                          open_only: bool = False, limit: int = 100) -> list[Order]:
    """The pharmacy's orders: oldest open first (the queue), or newest first when filtered."""
    require(principal, "manage:own_orders")
    stmt = (select(orders, pharmacies.c.name.label("pharmacy_name"))
            .join(pharmacies, pharmacies.c.tenant_id == orders.c.tenant_id)
            .where(orders.c.tenant_id == require_tenant(principal)))
    if status:
        stmt = stmt.where(orders.c.status == status).order_by(orders.c.placed_at.desc())
    elif open_only:
        stmt = stmt.where(orders.c.status.not_in(CLOSED)).order_by(orders.c.placed_at)
    else:
        stmt = stmt.order_by(orders.c.placed_at.desc())
    return await _orders(session, (await session.execute(stmt.limit(limit))).all())


async def _check_prescription(session: AsyncSession, principal: Principal, prescription_id: uuid.UUID | None,
                              lines: list[CartLine]) -> None:
    """Every prescription-only or controlled line is covered by the buyer's own valid prescription
    (409 naming the first line that is not)."""
    needing = [line for line in lines if line.medicine.needs_prescription]
    if not needing:
        return
    if prescription_id is None:
        raise Conflict(f"{needing[0].medicine.name} needs a prescription: choose your approved prescription for it.",
                       code="prescription-required", medicine_id=str(needing[0].medicine.id))
    dispensable = await prescribing.for_dispensing(session, principal, prescription_id)
    # Two checkouts from one prescription at once (at two pharmacies, say) take turns here.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                          {"key": f"prescription:{prescription_id}"})
    age = datetime.now(UTC) - dispensable.issued_at
    for line in needing:
        med = line.medicine
        rx_line = _line_for(dispensable, med)
        if rx_line is None:
            raise Conflict(f"{med.name} is not on this prescription.", code="not-prescribed", medicine_id=str(med.id))
        valid_days = CONTROLLED_VALID_DAYS if med.controlled_schedule else RX_VALID_DAYS
        if age > timedelta(days=valid_days):
            raise Conflict(f"{med.name}: this prescription is older than {valid_days} days; ask for a new one.",
                           code="prescription-expired", medicine_id=str(med.id))
        taken = await _already_taken(session, principal, prescription_id, med.generic_key)
        if med.controlled_schedule and taken:
            raise Conflict(f"{med.name} is a controlled medicine (schedule {med.controlled_schedule}): it is "
                           "dispensed once per prescription, and this one was.", code="controlled-already-dispensed",
                           medicine_id=str(med.id))
        allowed = packs_covered(rx_line, med) - taken
        if line.quantity > allowed:
            raise Conflict(f"{med.name}: the prescription covers {max(allowed, 0)} more pack(s), not {line.quantity}.",
                           code="over-prescribed", medicine_id=str(med.id), allowed=max(allowed, 0))


async def checkout(session: AsyncSession, principal: Principal, *, pharmacy_id: uuid.UUID, fulfilment: str,
                   contact_name: str, contact_phone: str | None = None, delivery_address: str | None = None,
                   delivery_lat: float | None = None, delivery_lon: float | None = None,
                   prescription_id: uuid.UUID | None = None, payment_method: str = "cod",
                   notes: str | None = None) -> Order:
    """Order the cart's lines at one pharmacy: today's prices, the prescription rules, and the
    stock held for the order, all or nothing (409 naming the line that failed)."""
    require(principal, "create:orders")
    if fulfilment not in ("delivery", "pickup"):
        raise ValidationFailed("fulfilment is delivery or pickup.", code="bad-fulfilment")
    if payment_method not in ("cod", "online"):
        raise ValidationFailed("payment_method is cod or online.", code="bad-payment-method")
    if fulfilment == "delivery" and not (delivery_address or "").strip():
        raise ValidationFailed("A delivery needs an address.", code="address-required")
    row = (await session.execute(select(pharmacies).where(pharmacies.c.tenant_id == pharmacy_id))).first()
    if row is None:
        raise NotFound("No such pharmacy.", code="pharmacy-not-found")
    pharmacy = _pharmacy(row)
    if not pharmacy.taking_orders:
        raise Conflict(f"{pharmacy.name} is not taking orders at the moment (its listing is paused or its "
                       "subscription has lapsed). Choose another pharmacy.", code="pharmacy-not-taking-orders")
    if fulfilment == "delivery" and delivery_lat is not None and delivery_lon is not None:
        distance, _ = _near(delivery_lat, delivery_lon, pharmacy.delivery_radius_km)
        km = (await session.execute(select(distance).where(pharmacies.c.tenant_id == pharmacy_id))).scalar()
        if km > pharmacy.delivery_radius_km:
            raise Conflict(f"{pharmacy.name} delivers within {pharmacy.delivery_radius_km:g} km; this address is "
                           f"{km:.1f} km away. Choose pickup or a nearer pharmacy.", code="outside-delivery-area")
    lines = (await cart(session, principal)).at(pharmacy_id)
    if not lines:
        raise Conflict(f"Your cart has nothing from {pharmacy.name}.", code="empty-cart")
    for line in lines:
        if line.problem == "no longer sold here":
            raise Conflict(f"{line.medicine.name} is no longer sold here: remove it from your cart.",
                           code="medicine-unavailable", medicine_id=str(line.medicine.id))
    cart_rx = {line.prescription_id for line in lines if line.prescription_id and line.medicine.needs_prescription}
    if prescription_id is None and len(cart_rx) == 1:
        prescription_id = cart_rx.pop()
    elif len(cart_rx - {prescription_id}) > (0 if prescription_id else 1):
        raise Conflict("These medicines come from different prescriptions: order them separately.",
                       code="several-prescriptions")
    await _check_prescription(session, principal, prescription_id, lines)

    order_id = new_id()
    number = f"ORD-{datetime.now(UTC):%Y}-{(await session.execute(func.nextval(ORDER_NUMBERS).select())).scalar():06d}"
    subtotal = sum(line.total_minor for line in lines)
    discount = sum(line.medicine.discount_minor * line.quantity for line in lines)
    fee = pharmacy.delivery_fee_minor if fulfilment == "delivery" else 0
    expires = datetime.now(UTC) + timedelta(minutes=UNPAID_ORDER_MINUTES) if payment_method == "online" else None
    await session.execute(orders.insert().values(
        id=order_id, tenant_id=pharmacy_id, number=number, patient_account_id=principal.account_id,
        patient_tenant_id=require_tenant(principal),
        contact_name=contact_name.strip(), contact_phone=contact_phone, status="placed", fulfilment=fulfilment,
        delivery_address=(delivery_address or "").strip() or None if fulfilment == "delivery" else None,
        prescription_id=prescription_id if any(line.medicine.needs_prescription for line in lines) else None,
        subtotal_minor=subtotal, discount_minor=discount, delivery_fee_minor=fee, total_minor=subtotal + fee,
        currency=pharmacy.currency, payment_method=payment_method, payment_status="pending", stock_held=False,
        expires_at=expires, notes=(notes or "").strip() or None, version=1))
    await session.execute(order_items.insert(), [
        {"order_id": order_id, "tenant_id": pharmacy_id, "patient_account_id": principal.account_id,
         "medicine_id": line.medicine.id, "name": line.medicine.name, "strength": line.medicine.strength,
         "generic_key": line.medicine.generic_key, "quantity": line.quantity,
         "unit_price_minor": line.medicine.price_minor, "mrp_minor": line.medicine.mrp_minor,
         "total_minor": line.total_minor} for line in lines])
    short = (await session.execute(text("SELECT * FROM pharmacy_reserve(:id)"), {"id": order_id})).first()
    if short is not None:
        raise Conflict(f"{short.name}: only {short.available} left, and the order wants {short.wanted}. Change the "
                       "quantity or choose another pharmacy.", code="out-of-stock", medicine_id=str(short.medicine_id),
                       available=short.available)
    await session.execute(delete(cart_items).where(cart_items.c.account_id == principal.account_id,
                                                   cart_items.c.pharmacy_id == pharmacy_id))
    await _record(session, order_id, pharmacy_id, principal.account_id, "placed", "patient", None)
    await _low_stock_after_reserve(session, [line.medicine for line in lines])
    if expires:
        await jobs.defer(session, "pharmacy.expire_unpaid", run_at=expires, order_id=str(order_id),
                         tenant_id=str(pharmacy_id))
    await realtime.publish(session, f"tenant:{pharmacy_id}:orders", {"type": "order:placed", "id": str(order_id),
                                                                     "number": number})
    # The pharmacists are told by a job in the pharmacy's own tenant: the buyer may be a patient of
    # another organization, whose transaction cannot write the pharmacy's notices.
    await jobs.defer(session, "pharmacy.tell_new_order", order_id=str(order_id), tenant_id=str(pharmacy_id))
    return await get_order(session, principal, order_id)


async def _low_stock_after_reserve(session: AsyncSession, meds: list[Medicine]) -> None:
    rows = (await session.execute(select(pharmacy_medicines.c.id, pharmacy_medicines.c.tenant_id).where(
        pharmacy_medicines.c.id.in_([m.id for m in meds]),
        pharmacy_medicines.c.stock - pharmacy_medicines.c.reserved <= pharmacy_medicines.c.low_stock_threshold))).all()
    before = {m.id: m for m in meds}
    for r in rows:
        m = before[r.id]
        if m.available > m.low_stock_threshold:  # this checkout took it across the line
            await jobs.defer(session, "pharmacy.low_stock_alert", tenant_id=str(r.tenant_id), medicine_id=str(r.id))


async def _record(session: AsyncSession, order_id: uuid.UUID, tenant_id: uuid.UUID, patient: uuid.UUID, status: str,
                  actor: str, note: str | None) -> None:
    await session.execute(order_events.insert().values(order_id=order_id, tenant_id=tenant_id,
                                                       patient_account_id=patient, status=status, note=note,
                                                       actor=actor))


async def move(session: AsyncSession, principal: Principal | None, order_id: uuid.UUID, status: str, *,
               actor: str | None = None, note: str | None = None, expected_version: int | None = None,
               courier: dict[str, str | None] | None = None, code_checked: bool = False) -> Order:
    """Move an order along the state machine. ``actor`` is worked out from the principal
    (the pharmacy's staff, or the order's patient); couriers and the system name themselves.

    An order paid online is packed only once paid, and is delivered only with the patient's
    delivery code (``verify_delivery_code``): its money waits in escrow until then, and completion
    releases it to the pharmacy. Closing it any other way refunds whatever was paid."""
    row = await _order_row(session, order_id, lock=True)
    if actor is None:
        assert principal is not None
        actor = _visible_to(principal, row)
    if expected_version is not None and expected_version != row.version:
        raise Conflict("The order changed since you read it: reload and try again.", code="version-mismatch")
    allowed = TRANSITIONS.get(row.status, {})
    if status == "cancelled" and status not in allowed:
        raise Conflict(f"Order {row.number} is already {STATUS_TEXT[row.status]}: it can no longer be cancelled.",
                       code="too-late-to-cancel")
    if status not in allowed or not _fits(row.fulfilment, row.status, status):
        nxt = [s for s in allowed if _fits(row.fulfilment, row.status, s)]
        raise Conflict(f"Order {row.number} is {row.status}: it can go to {', '.join(nxt) or 'nothing else'}, "
                       f"not {status}.", code="bad-transition", current_status=row.status, allowed=nxt)
    if actor not in allowed[status]:
        raise Conflict(f"The {actor} cannot move an order to {status}.", code="not-your-move")
    if status in ("rejected", "cancelled") and not (note or "").strip() and actor == "pharmacy":
        raise ValidationFailed("Say why the order is rejected: the patient reads it.", code="reason-required")
    online = row.payment_method == "online"
    if online and status in ("packed", "completed") and row.payment_status != "paid":
        raise Conflict(f"Order {row.number} is paid online and the payment has not arrived yet: wait for it "
                       "before packing.", code="awaiting-payment")
    if online and status == "delivered" and not code_checked:
        raise Conflict(f"Order {row.number} was paid online: it is delivered when the courier enters the patient's "
                       "delivery code.", code="delivery-code-required")
    if status in RELEASING:
        await session.execute(text("SELECT pharmacy_release(:id)"), {"id": order_id})
        if online:
            await payments.refund_later(session, "order", order_id, row.tenant_id,
                                        f"order {row.number} {STATUS_TEXT[status]}")
    values: dict[str, Any] = {"status": status, "updated_at": func.now(), "version": row.version + 1}
    if status in RELEASING and note:
        values["reason"] = note.strip()[:500]
    if courier:
        values.update(courier)
    if status == "completed":
        values["completed_at"] = func.now()
        values["receipt_number"] = f"RCT-{datetime.now(UTC):%Y}-" \
                                   f"{await numbering.next_number(session, row.tenant_id, 'RCT'):06d}"
        lines = select(order_items.c.medicine_id, func.sum(order_items.c.quantity).label("q")).where(
            order_items.c.order_id == order_id).group_by(order_items.c.medicine_id).order_by(order_items.c.medicine_id)
        for item in (await session.execute(lines)).all():
            await _stock_event(session, principal, item.medicine_id, -int(item.q), "sold", order_id=order_id,
                               release=int(item.q))
        await session.execute(update(orders).where(orders.c.id == order_id).values(stock_held=False))
        if online:
            await payments.release_escrow(session, row.tenant_id, row.currency, order_id)
    if status == "out_for_delivery" and online:
        await jobs.defer(session, "pharmacy.send_delivery_code", tenant_id=str(row.patient_tenant_id),
                         account_id=str(row.patient_account_id), order_id=str(order_id))
    await session.execute(update(orders).where(orders.c.id == order_id).values(**values))
    await _record(session, order_id, row.tenant_id, row.patient_account_id, status, actor, (note or "").strip() or None)
    await realtime.publish(session, f"tenant:{row.tenant_id}:orders",
                           {"type": "order:status", "id": str(order_id), "status": status})
    await realtime.publish(session, f"account:{row.patient_account_id}",
                           {"type": "order:status", "id": str(order_id), "status": status})
    if actor != "patient":
        await _tell_patient(session, row, status)
    return await _order(session, await _order_row(session, order_id))


async def _tell_patient(session: AsyncSession, row, status: str) -> None:
    """The patient's notice of a status change, kept in their own organization (where they read
    it): at once when that is the pharmacy's, else by a job in theirs (this transaction is the
    pharmacy's and cannot write another organization's notices)."""
    args = {"account_id": str(row.patient_account_id), "order_id": str(row.id), "number": row.number,
            "status": status}
    if row.patient_tenant_id == row.tenant_id:
        await tell_patient(session, row.tenant_id, **args)
    else:
        await jobs.defer(session, "pharmacy.tell_patient", tenant_id=str(row.patient_tenant_id), **args)


async def tell_patient(session: AsyncSession, tenant_id: uuid.UUID, *, account_id: str, order_id: str, number: str,
                       status: str) -> bool:
    return await notifications.notify(session, tenant_id=tenant_id, account_id=uuid.UUID(account_id),
                                      type="order.status", event_key=f"{order_id}:{status}",
                                      data={"order_number": number, "status_text": STATUS_TEXT[status]},
                                      link=f"/portal/orders/{order_id}")


@jobs.job("pharmacy.tell_patient")
async def _tell_patient_job(db, tenant_id: str, **args: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await tell_patient(session, uuid.UUID(tenant_id), **args)


async def expire_unpaid(session: AsyncSession, order_id: uuid.UUID) -> bool:
    """The job's work: an online order still unpaid at its deadline lets its stock go."""
    row = (await session.execute(select(orders.c.status, orders.c.payment_status, orders.c.expires_at)
                                 .where(orders.c.id == order_id))).first()
    if (row is None or row.payment_status != "pending" or row.expires_at is None
            or row.expires_at > datetime.now(UTC) or "expired" not in TRANSITIONS.get(row.status, {})):
        return False
    await move(session, None, order_id, "expired", actor="system", note="not paid in time")
    return True


# -- staff notices and jobs -----------------------------------------------------------------------


async def _tell_staff(session: AsyncSession, tenant_id: uuid.UUID, type: str, event_key: str, data: dict[str, Any],
                      link: str) -> None:
    for account in await tenants.accounts_with_role(session, tenant_id, "pharmacist"):
        await notifications.notify(session, tenant_id=tenant_id, account_id=account, type=type, event_key=event_key,
                                   data=data, link=link)


async def low_stock_alert(session: AsyncSession, tenant_id: uuid.UUID, medicine_id: uuid.UUID) -> bool:
    """Tell the pharmacists when a medicine is (still) at or below its threshold: once per
    crossing (the event key carries the stock level, so a refill and a second fall alert again)."""
    row = (await session.execute(
        select(pharmacy_medicines, pharmacies.c.name.label("pharmacy_name"))
        .join(pharmacies, pharmacies.c.tenant_id == pharmacy_medicines.c.tenant_id)
        .where(pharmacy_medicines.c.id == medicine_id, pharmacy_medicines.c.deleted_at.is_(None)))).first()
    if row is None:
        return False
    med = _medicine(row)
    if med.available > med.low_stock_threshold:
        return False
    last = (await session.execute(select(func.max(stock_events.c.id)).where(
        stock_events.c.medicine_id == medicine_id))).scalar()
    await _tell_staff(session, tenant_id, "stock.low", f"{medicine_id}:{last}:{med.reserved}",
                      {"medicine": med.name, "available": med.available, "threshold": med.low_stock_threshold,
                       "pharmacy": row.pharmacy_name}, "/portal/pharmacy/inventory?low_stock=1")
    return True


async def tell_new_order(session: AsyncSession, order_id: uuid.UUID) -> bool:
    """Tell the pharmacy's pharmacists of a new order (the job, in the pharmacy's tenant)."""
    row = (await session.execute(select(orders.c.tenant_id, orders.c.number, orders.c.fulfilment, orders.c.status)
                                 .where(orders.c.id == order_id))).first()
    if row is None or row.status != "placed":
        return False  # gone, or already dealt with: no point in ringing
    lines = (await session.execute(select(func.count()).where(order_items.c.order_id == order_id))).scalar()
    await _tell_staff(session, row.tenant_id, "order.new", str(order_id),
                      {"order_number": row.number, "lines": lines, "fulfilment": row.fulfilment},
                      "/portal/pharmacy/orders")
    return True


@jobs.job("pharmacy.tell_new_order")
async def _tell_new_order_job(db, order_id: str, tenant_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await tell_new_order(session, uuid.UUID(order_id))


@jobs.job("pharmacy.low_stock_alert")
async def _low_stock_job(db, tenant_id: str, medicine_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await low_stock_alert(session, uuid.UUID(tenant_id), uuid.UUID(medicine_id))


@jobs.job("pharmacy.expire_unpaid")
async def _expire_job(db, order_id: str, tenant_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        await expire_unpaid(session, uuid.UUID(order_id))


# -- delivery -------------------------------------------------------------------------------------

DELIVERY_STEPS = ("packed", "shipped", "out_for_delivery", "delivered")


async def dispatch(session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> Order:
    """Hand a packed delivery order to the courier. The local courier takes it at once (shipped)
    and moves it on by itself; a remote one moves it by its signed status callbacks."""
    require(principal, "manage:own_orders")
    row = await _order_row(session, order_id, lock=True)
    _visible_to(principal, row)
    if row.fulfilment != "delivery" or row.status != "packed":
        raise Conflict(f"Order {row.number} is {STATUS_TEXT[row.status]}: only a packed delivery order goes to a "
                       "courier.", code="not-dispatchable")
    if row.courier_ref:
        raise Conflict(f"Order {row.number} is already booked with {row.courier} ({row.courier_ref}).",
                       code="already-dispatched")
    pharmacy = _pharmacy((await session.execute(select(pharmacies).where(
        pharmacies.c.tenant_id == row.tenant_id))).one())
    settings = get_settings()
    carrier = couriers.courier(settings)
    cash = row.total_minor if row.payment_method == "cod" and row.payment_status == "pending" else 0
    booking = await carrier.book(couriers.Parcel(
        reference=row.number, pickup_name=pharmacy.name, pickup_address=pharmacy.address,
        pickup_phone=pharmacy.phone, drop_name=row.contact_name, drop_address=row.delivery_address or "",
        drop_phone=row.contact_phone, cash_to_collect_minor=cash, currency=row.currency,
        description=f"Medicines, order {row.number}"))
    fields = {"courier": carrier.name, "courier_ref": booking.ref, "tracking_url": booking.tracking_url}
    if carrier.name != "local":
        await session.execute(update(orders).where(orders.c.id == order_id).values(
            **fields, updated_at=func.now(), version=row.version + 1))
        await _record(session, order_id, row.tenant_id, row.patient_account_id, row.status, "pharmacy",
                      f"booked with {carrier.name} ({booking.ref})")
        return await get_order(session, principal, order_id)
    order = await move(session, principal, order_id, "shipped", note="handed to the local courier", courier=fields)
    await jobs.defer(session, "pharmacy.local_courier_step", delay_seconds=settings.local_courier_step_seconds,
                     order_id=str(order_id), tenant_id=str(row.tenant_id))
    return order


async def local_courier_step(session: AsyncSession, order_id: uuid.UUID) -> str | None:
    """The local courier's next step for an order it carries; None when it has arrived (or the
    pharmacy moved it on already)."""
    row = (await session.execute(select(orders.c.status, orders.c.courier, orders.c.payment_method)
                                 .where(orders.c.id == order_id))).first()
    if row is None or row.courier != "local" or row.status not in ("shipped", "out_for_delivery"):
        return None
    if row.status == "out_for_delivery" and row.payment_method == "online":
        return None  # at the door: delivered when the patient's code is entered
    nxt = DELIVERY_STEPS[DELIVERY_STEPS.index(row.status) + 1]
    await move(session, None, order_id, nxt, actor="courier", note="local courier")
    return nxt


async def courier_update(session: AsyncSession, update_: couriers.CourierUpdate, provider: str) -> str:
    """Apply a courier's (already authenticated) status news: the order walks forward along the
    delivery steps to where the courier says it is; old or repeated news changes nothing."""
    found = (await session.execute(text("SELECT * FROM pharmacy_order_for_courier(:courier, :ref)"),
                                   {"courier": provider, "ref": update_.ref})).first()
    if found is None:
        return "unknown booking"
    await set_context(session, found.tenant_id, None)
    if update_.status is None:
        return f"nothing to do for {update_.courier_status!r}"
    status, method = (await session.execute(select(orders.c.status, orders.c.payment_method)
                                            .where(orders.c.id == found.id))).one()
    if status not in DELIVERY_STEPS:
        return f"order is {status}"
    here, there = DELIVERY_STEPS.index(status), DELIVERY_STEPS.index(update_.status)
    if method == "online" and update_.status == "delivered":
        there -= 1  # a paid order is delivered by the patient's code, not the courier's word
    for step in DELIVERY_STEPS[here + 1:there + 1]:
        await move(session, None, found.id, step, actor="courier", note=f"{provider}: {update_.courier_status}")
    return "applied" if there > here else "already there"


@jobs.job("pharmacy.local_courier_step")
async def _local_courier_job(db, order_id: str, tenant_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), None) as session:
        if await local_courier_step(session, uuid.UUID(order_id)) == "out_for_delivery":
            await jobs.defer(session, "pharmacy.local_courier_step",
                             delay_seconds=get_settings().local_courier_step_seconds, order_id=order_id,
                             tenant_id=tenant_id)


# -- paying for an order (payments calls these through its "order" purpose) ----------------------


class _OrderPurpose:
    """What payments needs to know of an order: what is owed and by whom, and what to do once it
    is paid or refunded. Its money waits in the pharmacy's escrow until delivery."""

    credit = "escrow"

    async def payable(self, session: AsyncSession, principal: Principal, reference_id: uuid.UUID) -> payments.Payable:
        require(principal, "create:orders")
        row = await _order_row(session, reference_id)
        if _visible_to(principal, row) != "patient":
            raise NotFound("No such order.", code="order-not-found")
        if row.payment_method != "online":
            raise Conflict(f"Order {row.number} is paid {'on delivery' if row.fulfilment == 'delivery' else 'at pickup'}"
                           ", not online.", code="not-paid-online")
        if row.status in CLOSED:
            raise Conflict(f"Order {row.number} is {STATUS_TEXT[row.status]}: there is nothing to pay.",
                           code="order-closed")
        if row.payment_status != "pending":
            raise Conflict(f"Order {row.number} is paid already.", code="already-paid")
        return payments.Payable(tenant_id=row.tenant_id, account_id=row.patient_account_id,
                                notify_tenant_id=row.patient_tenant_id, total_minor=row.total_minor,
                                currency=row.currency, description=f"Order {row.number} at {row.pharmacy_name}",
                                return_url=f"/portal/orders/{row.id}")

    async def paid(self, session: AsyncSession, reference_id: uuid.UUID) -> bool:
        row = await _order_row(session, reference_id, lock=True)
        if row.status in CLOSED:
            return False
        if row.payment_status == "paid":
            return True
        await session.execute(update(orders).where(orders.c.id == reference_id).values(
            payment_status="paid", expires_at=None, updated_at=func.now(), version=row.version + 1))
        await _record(session, reference_id, row.tenant_id, row.patient_account_id, row.status, "system", "paid")
        for channel in (f"tenant:{row.tenant_id}:orders", f"account:{row.patient_account_id}"):
            await realtime.publish(session, channel, {"type": "order:paid", "id": str(reference_id)})
        return True

    async def refunded(self, session: AsyncSession, reference_id: uuid.UUID, fully: bool) -> None:
        if fully:
            await session.execute(update(orders).where(orders.c.id == reference_id, orders.c.payment_status == "paid")
                                  .values(payment_status="refunded", updated_at=func.now(),
                                          version=orders.c.version + 1))


payments.register_purpose("order", _OrderPurpose())


# -- OTP on delivery -------------------------------------------------------------------------------


def _code_hash(order_id: uuid.UUID, code: str) -> bytes:
    return bytes.fromhex(crypto.keyring().keyed_hash(f"delivery-code:{order_id}:{code}"))


def _cool_down(sent_at: datetime) -> None:
    """429 while the last code is younger than the resend cool-down."""
    wait = (sent_at + timedelta(seconds=get_settings().delivery_otp_resend_seconds) - datetime.now(UTC)).total_seconds()
    if wait > 0:
        seconds = math.ceil(wait)
        raise TooManyRequests(f"A new code can be sent in {seconds} s.", code="resend-too-soon",
                              headers={"Retry-After": str(seconds)}, retry_after=seconds)


async def send_delivery_code(session: AsyncSession, order_id: uuid.UUID, *, resend: bool = False) -> bool:
    """Make a new 6-digit code for an order at the door and text it to the patient (the job's work,
    in the patient's organization). A resend waits for the cool-down."""
    settings = get_settings()
    row = (await session.execute(select(orders.c.id, orders.c.number, orders.c.status, orders.c.tenant_id,
                                        orders.c.patient_account_id, orders.c.patient_tenant_id)
                                 .where(orders.c.id == order_id))).first()
    if row is None or row.status != "out_for_delivery":
        return False
    current = (await session.execute(select(delivery_otps).where(delivery_otps.c.order_id == order_id)
                                     .with_for_update())).first()
    now = datetime.now(UTC)
    if current is not None:
        if current.verified_at is not None:
            return False
        if not resend:
            return False  # the job ran twice: the first code stands
        _cool_down(current.sent_at)
    code = f"{secrets.randbelow(10**6):06d}"
    values = {"code_hash": _code_hash(order_id, code), "expires_at": now + timedelta(seconds=settings.delivery_otp_ttl_seconds),
              "attempts": 0, "sent_at": now}
    await session.execute(insert(delivery_otps).values(
        order_id=order_id, tenant_id=row.tenant_id, patient_account_id=row.patient_account_id, sends=1, **values)
        .on_conflict_do_update(index_elements=[delivery_otps.c.order_id],
                               set_={**values, "sends": delivery_otps.c.sends + 1}))
    await notifications.notify(session, tenant_id=row.patient_tenant_id, account_id=row.patient_account_id,
                               type="order.delivery_code", event_key=f"{order_id}:{now.timestamp()}",
                               data={"order_number": row.number, "code": code,
                                     "minutes": settings.delivery_otp_ttl_seconds // 60},
                               link=f"/portal/orders/{order_id}")
    return True


@jobs.job("pharmacy.send_delivery_code")
async def _send_delivery_code_job(db, tenant_id: str, account_id: str, order_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), uuid.UUID(account_id)) as session:
        await send_delivery_code(session, uuid.UUID(order_id))


async def resend_delivery_code(session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> None:
    """The patient (or the pharmacy, for them) asks for a new code: at most one a minute."""
    row = await _order_row(session, order_id)
    _visible_to(principal, row)
    if row.status != "out_for_delivery" or row.payment_method != "online":
        raise Conflict(f"Order {row.number} is {STATUS_TEXT[row.status]}: it has no delivery code to send.",
                       code="no-delivery-code")
    if principal.account_id == row.patient_account_id:
        await send_delivery_code(session, order_id, resend=True)
        return
    # The pharmacy's transaction cannot write the patient's notices in their organization: check
    # the cool-down here, send from a job there.
    sent = (await session.execute(select(delivery_otps.c.sent_at).where(delivery_otps.c.order_id == order_id))).scalar()
    if sent is not None:
        _cool_down(sent)
    await jobs.defer(session, "pharmacy.resend_delivery_code", tenant_id=str(row.patient_tenant_id),
                     account_id=str(row.patient_account_id), order_id=str(order_id))


@jobs.job("pharmacy.resend_delivery_code")
async def _resend_delivery_code_job(db, tenant_id: str, account_id: str, order_id: str) -> None:
    async with db.transaction(uuid.UUID(tenant_id), uuid.UUID(account_id)) as session:
        try:
            await send_delivery_code(session, uuid.UUID(order_id), resend=True)
        except TooManyRequests:
            pass  # sent meanwhile


async def verify_delivery_code(session: AsyncSession, principal: Principal, order_id: uuid.UUID, code: str) -> Order:
    """The courier enters the patient's code at the door: right, and the order is delivered and
    completed and its escrow released to the pharmacy; wrong, and nothing moves but the count of
    tries (five, then a new code is needed)."""
    require(principal, "manage:own_orders")
    row = await _order_row(session, order_id, lock=True)
    if _visible_to(principal, row) != "pharmacy":
        raise NotFound("No such order.", code="order-not-found")
    otp = (await session.execute(select(delivery_otps).where(delivery_otps.c.order_id == order_id)
                                 .with_for_update())).first()
    if row.status != "out_for_delivery" or otp is None or otp.verified_at is not None:
        raise Conflict(f"Order {row.number} is {STATUS_TEXT[row.status]}: there is no delivery code to check.",
                       code="no-delivery-code")
    max_attempts = get_settings().delivery_otp_max_attempts
    if otp.attempts >= max_attempts:
        raise TooManyRequests("Too many wrong codes: ask the patient to send a new one from their order page.",
                              code="too-many-attempts")
    if otp.expires_at <= datetime.now(UTC):
        raise Conflict("This delivery code has expired: ask the patient to send a new one from their order page.",
                       code="code-expired")
    if not secrets.compare_digest(otp.code_hash, _code_hash(order_id, (code or "").strip())):
        await session.execute(update(delivery_otps).where(delivery_otps.c.order_id == order_id).values(
            attempts=otp.attempts + 1))
        left = max_attempts - otp.attempts - 1
        raise ValidationFailed(f"That is not the delivery code ({left} tries left).", code="wrong-code",
                               keep_writes=True, attempts_left=left)
    await session.execute(update(delivery_otps).where(delivery_otps.c.order_id == order_id).values(
        verified_at=func.now()))
    await move(session, principal, order_id, "delivered", actor="courier", note="delivery code entered",
               code_checked=True)
    return await move(session, principal, order_id, "completed", actor="system", note="delivered with the code")


# -- receipts --------------------------------------------------------------------------------------


async def receipt_pdf(session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> tuple[str, bytes]:
    """A completed order's receipt (the patient's or the pharmacy's copy): the pharmacy, the lines
    at the prices paid, MRP savings, delivery, total, and how it was paid."""
    from carebase.platform.money import plain
    from carebase.platform.pdf import render_statement

    order = await get_order(session, principal, order_id)
    if order.receipt_number is None:
        raise Conflict(f"Order {order.number} is {order.status_text}: its receipt is issued when it is completed.",
                       code="no-receipt-yet")
    shop = _pharmacy((await session.execute(select(pharmacies).where(
        pharmacies.c.tenant_id == order.pharmacy_id))).one())
    cur = order.currency
    rows: list[tuple[str, ...]] = [("Item", "Qty", "Unit price", "Amount")]
    rows += [(f"{i.name} {i.strength or ''}".strip(), str(i.quantity), plain(i.unit_price_minor, cur),
              plain(i.total_minor, cur)) for i in order.items]
    if order.delivery_fee_minor:
        rows.append(("Delivery", "", "", plain(order.delivery_fee_minor, cur)))
    rows.append(("Total", "", "", plain(order.total_minor, cur)))
    how = {"cod": "cash on delivery or at the counter", "online": "paid online (card, UPI, netbanking or wallet)"}
    tax = "Prices include GST at each medicine's rate." if cur == "INR" else "Prices include VAT."
    body = render_statement(
        f"Receipt {order.receipt_number}",
        [(f"{shop.name}: receipt {order.receipt_number}", 15, "B"),
         (f"{shop.address}; drug licence {shop.licence_number}", 9, ""),
         (f"Order {order.number}, placed {order.placed_at:%d %b %Y}, completed "
          f"{order.completed_at:%d %b %Y}" if order.completed_at else f"Order {order.number}", 9, ""),
         (f"For {order.contact_name}", 10, "")],
        rows, (62, 10, 22, 22),
        [(f"You saved {plain(order.discount_minor, cur)} on the MRP. {tax} Payment: "
          f"{how.get(order.payment_method, order.payment_method)}.", 9, ""),
         ("Receipts are numbered per pharmacy without gaps.", 8, "")])
    return f"{order.receipt_number}.pdf", body
