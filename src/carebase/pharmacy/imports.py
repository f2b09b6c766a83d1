"""Bulk CSV import of a pharmacy's catalogue: a preview that checks every row (line, column,
message) and keeps the good ones, then a commit that creates new products and updates known ones
(the same name, strength, form and maker), so importing the same file again changes nothing.

Columns (header row, any order, case-insensitive): name, generic_name, category, manufacturer,
description, dosage_form, strength, pack_size, mrp and price (decimals in the currency, e.g. 35.50)
or mrp_minor and price_minor (integers), currency, stock (packs on the shelf, a count), low_stock_threshold,
requires_prescription (yes/no), controlled_schedule, image_url, is_available (yes/no).
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.pharmacy import schemas, service
from carebase.pharmacy.models import IDENTITY, medicine_imports, pharmacy_medicines, stock_events
from carebase.platform.authz import Principal, require, require_tenant
from carebase.platform.errors import Conflict, NotFound, ValidationFailed
from carebase.platform.ids import new_id

MAX_ROWS = 20_000
COLUMNS = ("name", "generic_name", "category", "manufacturer", "description", "dosage_form", "strength", "pack_size",
           "mrp", "price", "mrp_minor", "price_minor", "currency", "stock", "low_stock_threshold",
           "requires_prescription", "controlled_schedule", "image_url", "is_available")
_DECIMALS = {"JPY": 0, "KRW": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}
_YES, _NO = {"yes", "y", "true", "1"}, {"no", "n", "false", "0"}
_BATCH = 500


@dataclass
class Import:
    id: uuid.UUID
    filename: str | None
    total_rows: int
    valid_rows: int
    creates: int
    updates: int
    errors: list[dict[str, Any]]
    ignored_columns: list[str]
    committed_at: datetime | None = None
    result: dict[str, int] | None = None


def _identity(values: dict[str, Any]) -> tuple[str, str, str, str]:
    return tuple((values.get(k) or "").casefold() for k in ("name", "strength", "dosage_form", "manufacturer"))


class _RowError(Exception):
    def __init__(self, column: str, message: str):
        self.column, self.message = column, message


def _money(raw: dict[str, str], column: str, currency: str) -> int | None:
    if raw.get(f"{column}_minor"):
        try:
            return int(raw[f"{column}_minor"])
        except ValueError:
            raise _RowError(f"{column}_minor", "must be a whole number of minor units") from None
    text = raw.get(column)
    if not text:
        return None
    places = _DECIMALS.get(currency, 2)
    try:
        minor = Decimal(text.replace(",", "")) * (10 ** places)
    except InvalidOperation:
        raise _RowError(column, f"{text!r} is not an amount (e.g. 35.50)") from None
    if minor != minor.to_integral_value() or not minor.is_finite():
        raise _RowError(column, f"{text!r} has more than {places} decimal places for {currency}")
    return int(minor)


def _flag(raw: dict[str, str], column: str) -> bool | None:
    text = (raw.get(column) or "").strip().casefold()
    if not text:
        return None
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise _RowError(column, f"{raw[column]!r} is not yes or no")


def _row(raw: dict[str, str], default_currency: str) -> dict[str, Any]:
    """One CSV row as the API's body for a new medicine, or the first problem with it."""
    currency = (raw.get("currency") or default_currency).strip().upper()
    body: dict[str, Any] = {k: raw[k].strip() for k in ("name", "generic_name", "category", "manufacturer",
                                                          "description", "dosage_form", "strength",
                                                          "controlled_schedule", "image_url")
                            if (raw.get(k) or "").strip()}
    body["currency"] = currency
    for column, field in (("mrp", "mrp_minor"), ("price", "price_minor")):
        value = _money(raw, column, currency)
        if value is not None:
            body[field] = value
    for column in ("pack_size", "stock", "low_stock_threshold"):
        if (raw.get(column) or "").strip():
            try:
                body[column] = int(raw[column])
            except ValueError:
                raise _RowError(column, f"{raw[column]!r} is not a whole number") from None
    for column in ("requires_prescription", "is_available"):
        if (flag := _flag(raw, column)) is not None:
            body[column] = flag
    if "price_minor" not in body and "mrp_minor" in body:
        body["price_minor"] = body["mrp_minor"]  # no discount given: sold at the MRP
    try:
        values = schemas.NewMedicineIn.model_validate(body).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "row"
        column = {"mrp_minor": "mrp", "price_minor": "price"}.get(field, field)
        if column in ("mrp", "price") and f"{column}_minor" in raw:
            column = f"{column}_minor"
        message = "is required" if first["type"] == "missing" else first["msg"]
        raise _RowError(column, message) from None
    try:
        service.check_medicine(values)
    except ValidationFailed as exc:
        raise _RowError("price", exc.detail) from None
    return values


def _parse(data: bytes, default_currency: str) -> tuple[int, list[dict], list[dict], list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("The file is not UTF-8 text: save it as CSV UTF-8.", code="bad-csv") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise ValidationFailed("The file is empty: the first line names the columns.", code="bad-csv")
    reader.fieldnames = [(f or "").strip().casefold() for f in reader.fieldnames]
    header = set(reader.fieldnames)
    missing = [c for c in ("name", "category") if c not in header]
    if not {"mrp", "mrp_minor"} & header:
        missing.append("mrp (or mrp_minor)")
    if missing:
        raise ValidationFailed(f"The header lacks {', '.join(missing)}; columns: {', '.join(COLUMNS)}.",
                               code="bad-csv")
    ignored = sorted(header - set(COLUMNS))
    rows, errors, seen = [], [], {}
    total = 0
    try:
        for raw in reader:
            total += 1
            line = reader.line_num
            if total > MAX_ROWS:
                raise ValidationFailed(f"At most {MAX_ROWS:,} rows per file: split it.", code="too-many-rows")
            if None in raw:  # more cells than the header has columns
                errors.append({"line": line, "column": "row", "message": "more cells than the header has columns"})
                continue
            try:
                values = _row({k: v or "" for k, v in raw.items()}, default_currency)
            except _RowError as exc:
                errors.append({"line": line, "column": exc.column, "message": exc.message})
                continue
            key = _identity(values)
            if key in seen:
                errors.append({"line": line, "column": "name", "message": f"the same product as line {seen[key]}"})
                continue
            seen[key] = line
            rows.append({"line": line, "values": values})
    except csv.Error as exc:
        raise ValidationFailed(f"The CSV is malformed near line {reader.line_num}: {exc}.", code="bad-csv") from None
    return total, rows, errors, ignored


async def _existing(session: AsyncSession, tenant_id: uuid.UUID) -> dict[tuple, Any]:
    """The catalogue by identity: one read, matched in Python (a 500-row IN list of row values
    is compared row by row by the server, far slower for a whole file)."""
    rows = (await session.execute(select(pharmacy_medicines, *IDENTITY).where(
        pharmacy_medicines.c.tenant_id == tenant_id, pharmacy_medicines.c.deleted_at.is_(None)))).all()
    return {tuple(r[-4:]): r for r in rows}


async def preview(session: AsyncSession, principal: Principal, *, filename: str | None, data: bytes) -> Import:
    """Check every row and keep the good ones for ``commit``; nothing in the catalogue changes."""
    require(principal, "manage:own_inventory")
    tenant_id = require_tenant(principal)
    pharmacy = await service.own_pharmacy(session, principal)
    total, rows, errors, ignored = _parse(data, pharmacy.currency)
    known = await _existing(session, tenant_id)
    import_id = new_id()
    await session.execute(medicine_imports.insert().values(
        id=import_id, tenant_id=tenant_id, created_by=principal.account_id, filename=(filename or "")[:200] or None,
        sha256=hashlib.sha256(data).hexdigest(), total_rows=total, rows=rows, errors=errors))
    updates = sum(1 for r in rows if _identity(r["values"]) in known)
    return Import(import_id, filename, total, len(rows), len(rows) - updates, updates, errors, ignored)


async def get_import(session: AsyncSession, principal: Principal, import_id: uuid.UUID) -> Import:
    require(principal, "manage:own_inventory")
    row = (await session.execute(select(medicine_imports).where(
        medicine_imports.c.id == import_id, medicine_imports.c.tenant_id == require_tenant(principal)))).first()
    if row is None:
        raise NotFound("No such import.", code="import-not-found")
    known = await _existing(session, row.tenant_id) if row.committed_at is None else {}
    updates = sum(1 for r in row.rows if _identity(r["values"]) in known)
    return Import(row.id, row.filename, row.total_rows, len(row.rows), len(row.rows) - updates, updates, row.errors,
                  [], row.committed_at, row.result)


async def commit(session: AsyncSession, principal: Principal, import_id: uuid.UUID, *,
                 skip_invalid: bool = False) -> Import:
    """Apply a previewed import: new products are created with their stock as a 'received'
    event; known ones are updated, a different stock count being an 'adjusted' event. A file
    with bad rows is applied only with ``skip_invalid`` (the bad rows are left out)."""
    require(principal, "manage:own_inventory")
    tenant_id = require_tenant(principal)
    row = (await session.execute(select(medicine_imports).where(
        medicine_imports.c.id == import_id, medicine_imports.c.tenant_id == tenant_id).with_for_update())).first()
    if row is None:
        raise NotFound("No such import.", code="import-not-found")
    if row.committed_at is not None:
        raise Conflict("This import was already applied.", code="import-committed")
    if row.errors and not skip_invalid:
        raise Conflict(f"{len(row.errors)} row(s) have errors: fix the file and preview it again, or apply the "
                       f"{len(row.rows)} good rows only (skip_invalid=true).", code="import-has-errors",
                       errors=len(row.errors))
    result = {"created": 0, "updated": 0, "unchanged": 0, "skipped": len(row.errors)}
    problems = []
    known = await _existing(session, tenant_id)
    for i in range(0, len(row.rows), _BATCH):
        batch = row.rows[i:i + _BATCH]
        new_rows, new_events = [], []
        for item in batch:
            values = dict(item["values"])
            stock = values.pop("stock")
            current = known.get(_identity(values))
            if current is None:
                medicine_id = new_id()
                new_rows.append({**values, "id": medicine_id, "tenant_id": tenant_id, "stock": stock, "reserved": 0,
                                 "version": 1, "generic_key": service.generic_key(values.get("generic_name"),
                                                                                  values["name"])})
                if stock:
                    new_events.append({"tenant_id": tenant_id, "medicine_id": medicine_id, "change": stock,
                                       "reason": "received", "stock_after": stock, "actor_id": principal.account_id,
                                       "note": "CSV import"})
                result["created"] += 1
                continue
            changed = {k: v for k, v in values.items() if getattr(current, k) != v}
            if stock < current.reserved:
                problems.append({"line": item["line"], "column": "stock",
                                 "message": f"{current.reserved} pack(s) are held by open orders: stock cannot be "
                                            f"{stock}"})
                result["skipped"] += 1
                continue
            if not changed and stock == current.stock:
                result["unchanged"] += 1
                continue
            if changed:
                changed["generic_key"] = service.generic_key(values.get("generic_name"), values["name"])
            await session.execute(update(pharmacy_medicines).where(pharmacy_medicines.c.id == current.id).values(
                **changed, stock=stock, version=current.version + 1, updated_at=func.now()))
            if stock != current.stock:
                new_events.append({"tenant_id": tenant_id, "medicine_id": current.id, "change": stock - current.stock,
                                   "reason": "adjusted", "stock_after": stock, "actor_id": principal.account_id,
                                   "note": "CSV import"})
            result["updated"] += 1
        if new_rows:
            await session.execute(pharmacy_medicines.insert(), new_rows)
        if new_events:
            await session.execute(stock_events.insert(), new_events)
        await service.remember_words(session, [n for r in batch for n in (r["values"]["name"],
                                                                           r["values"].get("generic_name") or "")])
    now = datetime.now(UTC)
    await session.execute(update(medicine_imports).where(medicine_imports.c.id == import_id).values(
        committed_at=now, result=result, errors=row.errors + problems))
    return Import(row.id, row.filename, row.total_rows, len(row.rows), result["created"], result["updated"],
                  row.errors + problems, [], now, result)
