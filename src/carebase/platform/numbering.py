"""Document numbers without gaps, per organization and series (invoices, receipts): the counter
row is taken in the caller's transaction, so a document that rolls back gives its number back,
and two documents of one series take turns on the row (never the same number twice)."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Column, String, Table
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.platform.db import metadata

document_numbers = Table(
    "document_numbers",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("series", String(16), primary_key=True),
    Column("last", BigInteger, nullable=False),
)


async def next_number(session: AsyncSession, tenant_id: uuid.UUID, series: str) -> int:
    stmt = insert(document_numbers).values(tenant_id=tenant_id, series=series, last=1)
    stmt = stmt.on_conflict_do_update(index_elements=[document_numbers.c.tenant_id, document_numbers.c.series],
                                      set_={"last": document_numbers.c.last + 1})
    return int((await session.execute(stmt.returning(document_numbers.c.last))).scalar_one())
