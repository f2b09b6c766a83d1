"""HL7 v2.5 ADT ingestion: parse, acknowledge, and map A01 (admit), A03 (discharge), A04
(register), A08 (update) and A40 (merge) onto patients and encounters through their services.

Every message lands in the inbox, whatever becomes of it. The ACK says what happened: AA
(applied), AE (understood but not applied: the reason is in ERR and nothing was written), AR
(rejected: not a message we can read, or a type we do not take). A control id (MSH-10) from one
sender is applied once: the same message again is acknowledged AA and changes nothing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import hl7
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from carebase.encounters import service as encounters
from carebase.hl7v2.models import hl7_messages
from carebase.identity import service as identity
from carebase.patients import service as patients
from carebase.platform import crypto
from carebase.platform.authz import HL7_INGEST, Principal, require, require_tenant
from carebase.platform.errors import Conflict, DomainError, Forbidden, NotFound
from carebase.platform.ids import new_id
from carebase.platform.logging import get_logger
from carebase.platform.web import refusable
from carebase.providers import service as providers
from carebase.tenants import service as tenants

log = get_logger("carebase.hl7v2")

EVENTS = ("A01", "A03", "A04", "A08", "A40")
STATUSES = ("processed", "duplicate", "error", "rejected")
_CLASS = {"I": "hospital", "E": "emergency", "O": "office_visit", "P": "office_visit", "R": "office_visit"}
_SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "U": "U", "N": "U"}
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
MAX_MESSAGE = 1_000_000


# HL7 table 0357 (message error condition codes), as ERR-3 says them.
SEGMENT_SEQUENCE = "100^Segment sequence error^HL70357"
REQUIRED_FIELD_MISSING = "101^Required field missing^HL70357"
UNSUPPORTED_TYPE = "200^Unsupported message type^HL70357"
UNSUPPORTED_VERSION = "203^Unsupported version id^HL70357"
APPLICATION_ERROR = "207^Application internal error^HL70357"


class Rejected(Exception):
    """AR: the message cannot be read as an HL7 v2 message we take."""

    def __init__(self, reason: str, where: str = "MSH", condition: str = SEGMENT_SEQUENCE):
        super().__init__(reason)
        self.reason, self.where, self.condition = reason, where, condition


class ApplicationError(DomainError):
    """AE: read, but not applied (a required field missing, an unknown patient or doctor)."""
    code, status, title = "hl7-application-error", 422, "The message could not be applied"

    def __init__(self, reason: str, where: str):
        super().__init__(reason, where=where)
        self.where = where


@dataclass
class Outcome:
    message_id: uuid.UUID
    ack: str  # the acknowledgement message, ER7, segments separated by \r
    code: str  # AA | AE | AR
    status: str  # processed | duplicate | error | rejected
    error: str | None = None


def _sealing(message_id: uuid.UUID) -> tuple[bytes, bytes]:
    return crypto.keyring().derive("hl7-inbox"), b"hl7:" + str(message_id).encode()


def _now_ts() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def _escape(text: str) -> str:
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
            .replace("~", "\\R\\").replace("\r", " ").replace("\n", " "))


def ack(header: dict[str, str], code: str, text: str | None = None, where: str | None = None,
        condition: str = APPLICATION_ERROR) -> str:
    """An ACK for a message whose MSH read as ``header`` (parts may be missing for a rejected one)."""
    event = header.get("event", "")
    segments = [
        "|".join(["MSH", "^~\\&", "Carebase", header.get("receiving_facility", ""), header.get("sending_app", ""),
                  header.get("sending_facility", ""), _now_ts(), "", f"ACK^{event}^ACK" if event else "ACK",
                  uuid.uuid4().hex[:20], header.get("processing_id", "") or "P", header.get("version", "") or "2.5"]),
        "|".join(["MSA", code, _escape(header.get("control_id", "")), _escape(text or "")[:80]]),
    ]
    if code != "AA":
        # ERR-2 is a location (segment^sequence^field: ours, never the sender's text), ERR-8 the reason.
        segments.append("|".join(["ERR", "", where or "", condition, "E", "", "", "", _escape(text or "")]))
    return "\r".join(segments) + "\r"


def _header(raw: str) -> dict[str, str]:
    """MSH read by hand, so that even a message the parser refuses gets a proper ACK."""
    first = raw.split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return {}
    sep = first[3]
    f = first.split(sep)
    get = lambda i: f[i] if len(f) > i else ""  # noqa: E731 - MSH-n is f[n-1] (MSH-1 is the separator)
    msg_type = get(8).split(first[4] if len(first) > 4 else "^")
    return {"sending_app": get(2), "sending_facility": get(3), "receiving_app": get(4),
            "receiving_facility": get(5), "type": msg_type[0] if msg_type else "",
            "event": msg_type[1] if len(msg_type) > 1 else "", "control_id": get(9), "processing_id": get(10),
            "version": get(11)}


def _normalize(raw: str) -> str:
    # Feeds end segments with \r (the standard), \n or \r\n; a trailing newline is not a segment.
    return "\r".join(s for s in re.split(r"\r\n|\r|\n", raw.strip()) if s)


def parse(raw: str) -> tuple[Any, dict[str, str]]:
    """The parsed message and its header, or Rejected (AR) with the reason."""
    if len(raw) > MAX_MESSAGE:
        raise Rejected(f"The message is larger than {MAX_MESSAGE} bytes.")
    text = _normalize(raw)
    header = _header(text)
    if not header:
        raise Rejected("The message does not start with an MSH segment.")
    for name, label in (("type", "MSH-9 message type"), ("control_id", "MSH-10 control id"),
                        ("version", "MSH-12 version")):
        if not header[name]:
            raise Rejected(f"{label} is missing: the header is truncated or malformed.", "MSH",
                           REQUIRED_FIELD_MISSING)
    if not header["version"].startswith("2."):
        raise Rejected(f"HL7 version {header['version']} is not v2.", "MSH^1^12", UNSUPPORTED_VERSION)
    try:
        message = hl7.parse(text)
    except Exception as exc:  # the parser's errors are varied; any of them means AR
        raise Rejected(f"The message cannot be parsed ({type(exc).__name__}).") from exc
    if header["type"] != "ADT" or header["event"] not in EVENTS:
        raise Rejected(f"{header['type']}^{header['event']} is not taken here; send ADT A01, A03, A04, A08 or A40.",
                       "MSH^1^9", UNSUPPORTED_TYPE)
    return message, header


def _field(message, path: str) -> str:
    try:
        value = message[path]
    except (KeyError, IndexError, ValueError):
        return ""
    return message.unescape(str(value)) if value else ""


def _segment(message, name: str):
    try:
        return message.segment(name)
    except KeyError:
        return None


def timestamp(value: str, tz: ZoneInfo, where: str) -> datetime | None:
    """An HL7 TS (YYYYMMDDHHMM[SS][+ZZZZ]); without an offset, a wall-clock time of the organization."""
    if not value:
        return None
    m = _TS.match(value.strip())
    if m is None:
        raise ApplicationError(f"{where} {value!r} is not an HL7 timestamp (YYYYMMDDHHMMSS).", where)
    y, mo, d, h, mi, s, offset = m.groups()
    try:
        at = datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        raise ApplicationError(f"{where} {value!r} is not a real date and time.", where) from None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        return at.replace(tzinfo=timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))))
    return at.replace(tzinfo=tz)


def _birth_date(value: str) -> date | None:
    if not value:
        return None
    m = _TS.match(value.strip())
    if m is None or not m.group(3):
        raise ApplicationError(f"PID-7 birth date {value!r} must be a full date (YYYYMMDD).", "PID^1^7")
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ApplicationError(f"PID-7 birth date {value!r} is not a real date.", "PID^1^7") from None


def _mrn(message, segment: str = "PID", field: int = 3) -> str:
    """The medical record number among the identifiers (the repetition typed MR, else the first)."""
    seg = _segment(message, segment)
    if seg is None or len(seg) <= field or not seg[field]:
        return ""
    values = [(_field(message, f"{segment}.F{field}.R{r}.C5"), _field(message, f"{segment}.F{field}.R{r}.C1"))
              for r in range(1, len(seg[field]) + 1)]
    typed = [v for kind, v in values if kind == "MR" and v]
    return (typed or [v for _, v in values if v] or [""])[0]


def demographics(message) -> dict[str, Any]:
    """The register's fields from PID (only what the message carries: an absent field changes nothing)."""
    if _segment(message, "PID") is None:
        raise ApplicationError("The PID segment is missing.", "PID")
    out: dict[str, Any] = {}
    family, given = _field(message, "PID.F5.R1.C1"), _field(message, "PID.F5.R1.C2")
    middle = _field(message, "PID.F5.R1.C3")
    if family:
        out["family_name"] = family[:100]
    if given:
        out["given_name"] = f"{given} {middle}".strip()[:100]
    birth = _birth_date(_field(message, "PID.F7"))
    if birth:
        out["birth_date"] = birth
    sex = _field(message, "PID.F8")
    if sex:
        out["gender"] = _SEX.get(sex.upper(), "U")
    phone = _field(message, "PID.F13.R1.C12") or _field(message, "PID.F13.R1.C1")
    digits = "".join(c for c in phone if c.isdigit() or c == "+")
    if len(digits) >= 7:
        out["phone"] = digits if digits.startswith("+") else "+" + digits
    email = _field(message, "PID.F13.R1.C4")
    if "@" in email:
        out["email"] = email
    country = _field(message, "PID.F11.R1.C6")
    if len(country) == 2:
        out["country"] = country.upper()
    return out


async def _find_patient(session: AsyncSession, principal: Principal, mrn: str) -> patients.Patient | None:
    found = await patients.find_patients(session, principal, patients.Criteria(identifiers=[mrn]), limit=2,
                                         purpose="operations")
    return found.patients[0] if found.patients else None


async def _upsert_patient(session: AsyncSession, principal: Principal, message, *,
                          must_exist: bool = False) -> patients.Patient:
    mrn = _mrn(message)
    if not mrn:
        raise ApplicationError("PID-3 carries no patient identifier.", "PID^1^3")
    values = demographics(message)
    existing = await _find_patient(session, principal, mrn)
    if existing is None:
        if must_exist:
            raise ApplicationError(f"No patient with record number {mrn} to update; send A04 or A01 first.",
                                   "PID^1^3")
        missing = [label for key, label in (("family_name", "PID-5.1 family name"), ("given_name", "PID-5.2 given name"),
                                            ("birth_date", "PID-7 birth date")) if key not in values]
        if missing:
            raise ApplicationError(f"A new patient needs {', '.join(missing)}.", "PID")
        return await patients.register_patient(session, principal, mrn=mrn, allow_duplicate=True, **values)
    return await patients.update_patient(session, principal, existing.id, expected_version=None, changes=values)


async def _attending(session: AsyncSession, principal: Principal, message) -> uuid.UUID:
    npi = _field(message, "PV1.F7.R1.C1")
    if not npi:
        raise ApplicationError("PV1-7 attending doctor is missing.", "PV1^1^7")
    found = await providers.provider_by_npi(session, principal, npi)
    if found is None:
        raise ApplicationError(f"The attending doctor {npi} (PV1-7, by NPI) is not in the provider directory.",
                               "PV1^1^7")
    return found.id


async def _apply(session: AsyncSession, principal: Principal, message, event: str,
                 tz: ZoneInfo) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """Apply one ADT event; (patient id, encounter id) it touched."""
    when = (timestamp(_field(message, "EVN.F2"), tz, "EVN^1^2")
            or timestamp(_field(message, "MSH.F7"), tz, "MSH^1^7") or datetime.now(UTC))
    if event == "A40":
        survivor_mrn = _mrn(message)
        prior_mrn = _mrn(message, "MRG", 1)
        if not survivor_mrn or not prior_mrn:
            raise ApplicationError("A40 needs the surviving patient (PID-3) and the prior one (MRG-1).", "MRG^1^1")
        survivor = await _find_patient(session, principal, survivor_mrn)
        prior = await _find_patient(session, principal, prior_mrn)
        if survivor is None or prior is None:
            which = survivor_mrn if survivor is None else prior_mrn
            raise ApplicationError(f"No patient with record number {which} to merge.",
                                   "PID^1^3" if survivor is None else "MRG^1^1")
        kept = await patients.merge_patients(session, principal, prior.id, survivor.id)
        return kept.id, None
    patient = await _upsert_patient(session, principal, message, must_exist=event == "A08")
    if event in ("A04", "A08"):
        return patient.id, None
    visit = _field(message, "PV1.F19.R1.C1")
    if not visit:
        raise ApplicationError("PV1-19 visit number is missing.", "PV1^1^19")
    stay = await encounters.by_visit_number(session, principal, visit)
    if event == "A01":
        if stay is not None:  # the same admission sent again under a new control id
            return patient.id, stay.id
        admitted = timestamp(_field(message, "PV1.F44"), tz, "PV1^1^44") or when
        kind = _CLASS.get(_field(message, "PV1.F2").upper(), "hospital")
        e = await encounters.record_encounter(
            session, principal, patient.id, type=kind, occurred_at=min(admitted, datetime.now(UTC)),
            provider_id=await _attending(session, principal, message), admission=visit,
            chief_complaint=_field(message, "PV2.F3.R1.C2") or _field(message, "PV2.F3.R1.C1") or None)
        return patient.id, e.id
    # A03
    if stay is None:
        raise ApplicationError(f"No admission with visit number {visit} to discharge.", "PV1^1^19")
    ended = timestamp(_field(message, "PV1.F45"), tz, "PV1^1^45") or when
    e = await encounters.discharge(session, principal, stay.id, ended_at=min(ended, datetime.now(UTC)))
    return patient.id, e.id


async def _record(session: AsyncSession, principal: Principal, raw: str, header: dict[str, str], *, via: str,
                  status: str, code: str, error: str | None = None, patient_id=None, encounter_id=None,
                  replay_of: uuid.UUID | None = None) -> uuid.UUID:
    message_id = new_id()
    key, aad = _sealing(message_id)
    await session.execute(insert(hl7_messages).values(
        id=message_id, tenant_id=require_tenant(principal),
        api_key_id=principal.account_id if principal.roles == ("integration",) else None, via=via,
        control_id=header.get("control_id") or None, sender=_sender(header) if header else None,
        message_type=f"{header.get('type')}^{header.get('event')}"[:20] if header.get("type") else None,
        sealed_body=crypto.seal(key, raw.encode(), aad), status=status, ack_code=code, error=error,
        patient_id=patient_id, encounter_id=encounter_id, replay_of=replay_of, received_at=datetime.now(UTC)))
    return message_id


def _sender(header: dict[str, str]) -> str:
    return f"{header.get('sending_app', '')}^{header.get('sending_facility', '')}"[:200]


def require_ingest(principal: Principal) -> None:
    require(principal, "ingest:hl7")
    if principal.scope is not None and HL7_INGEST not in principal.scope.split():
        raise Forbidden("This key's scope does not include hl7:ingest.", code="insufficient-scope")


async def ingest(session: AsyncSession, principal: Principal, raw: str, *, via: str,
                 replay_of: uuid.UUID | None = None) -> Outcome:
    """Take one message: acknowledge it, apply it if it can be, keep it in the inbox either way."""
    require_ingest(principal)
    try:
        if "\x00" in raw:  # corrupt (and a replay of it is refused again)
            raise Rejected("The message holds the NUL character (0x00), which HL7 v2 text never does.")
        message, header = parse(raw)
    except Rejected as r:
        # Kept sealed as it came; its header goes in text columns, where PostgreSQL takes no NUL.
        header = _header(_normalize(raw.replace("\x00", "\ufffd")))
        mid = await _record(session, principal, raw, header, via=via, status="rejected", code="AR", error=r.reason,
                            replay_of=replay_of)
        log.info("hl7_rejected", message_id=str(mid), reason=r.reason)
        return Outcome(mid, ack(header, "AR", r.reason, r.where, r.condition), "AR", "rejected", r.reason)
    tenant = await tenants.current_tenant(session, principal)
    done = (await session.execute(select(hl7_messages.c.id, hl7_messages.c.patient_id, hl7_messages.c.encounter_id)
                                  .where(hl7_messages.c.tenant_id == tenant.id, hl7_messages.c.status == "processed",
                                         hl7_messages.c.sender == _sender(header),
                                         hl7_messages.c.control_id == header["control_id"]))).first()
    if done is not None:
        mid = await _record(session, principal, raw, header, via=via, status="duplicate", code="AA",
                            patient_id=done.patient_id, encounter_id=done.encounter_id, replay_of=replay_of)
        return Outcome(mid, ack(header, "AA", "Already processed: no change."), "AA", "duplicate")

    async def apply():
        return await _apply(session, principal, message, header["event"], ZoneInfo(tenant.timezone))

    result = await refusable(session, apply)  # a refusal rolls back whatever the event had written
    if isinstance(result, DomainError):
        where = getattr(result, "where", None) or ""
        reason = result.detail
        mid = await _record(session, principal, raw, header, via=via, status="error", code="AE", error=reason,
                            replay_of=replay_of)
        log.info("hl7_application_error", message_id=str(mid), code=result.code)
        return Outcome(mid, ack(header, "AE", reason, where), "AE", "error", reason)
    patient_id, encounter_id = result
    mid = await _record(session, principal, raw, header, via=via, status="processed", code="AA",
                        patient_id=patient_id, encounter_id=encounter_id, replay_of=replay_of)
    return Outcome(mid, ack(header, "AA"), "AA", "processed")


# -- the inbox, for administrators -------------------------------------------------------------------


@dataclass
class InboxEntry:
    id: uuid.UUID
    received_at: datetime
    via: str
    control_id: str | None
    sender: str | None
    message_type: str | None
    status: str
    ack_code: str
    error: str | None
    patient_id: uuid.UUID | None
    encounter_id: uuid.UUID | None
    replay_of: uuid.UUID | None
    body: str | None = None  # the message itself, when one entry is opened


def _entry(r, body: str | None = None) -> InboxEntry:
    return InboxEntry(r.id, r.received_at, r.via, r.control_id, r.sender, r.message_type, r.status, r.ack_code,
                      r.error, r.patient_id, r.encounter_id, r.replay_of, body)


async def inbox(session: AsyncSession, principal: Principal, *, status: str | None = None,
                limit: int = 100) -> tuple[list[InboxEntry], dict[str, int]]:
    """The latest messages (newest first) and how many there are in each status."""
    require(principal, "manage:settings")
    tenant_id = require_tenant(principal)
    query = select(hl7_messages).where(hl7_messages.c.tenant_id == tenant_id)
    if status:
        query = query.where(hl7_messages.c.status == status)
    rows = (await session.execute(query.order_by(hl7_messages.c.received_at.desc()).limit(limit))).all()
    counts = dict((await session.execute(select(hl7_messages.c.status, func.count()).where(
        hl7_messages.c.tenant_id == tenant_id).group_by(hl7_messages.c.status))).all())
    return [_entry(r) for r in rows], counts


async def _load(session: AsyncSession, principal: Principal, message_id: uuid.UUID):
    require(principal, "manage:settings")
    r = (await session.execute(select(hl7_messages).where(hl7_messages.c.id == message_id,
                                                          hl7_messages.c.tenant_id == require_tenant(principal)))).first()
    if r is None:
        raise NotFound("No such HL7 message in your organization's inbox.", code="hl7-message-not-found")
    return r


async def message(session: AsyncSession, principal: Principal, message_id: uuid.UUID) -> InboxEntry:
    """One message with its text (it names a patient: admins only, as the inbox)."""
    return _opened(await _load(session, principal, message_id))


def _opened(r) -> InboxEntry:
    key, aad = _sealing(r.id)
    return _entry(r, crypto.open_sealed(key, r.sealed_body, aad).decode())


async def replay(session: AsyncSession, principal: Principal, message_id: uuid.UUID) -> Outcome:
    """Run a kept message again (after fixing what made it fail: a doctor added to the directory,
    a patient registered), acting as the key that sent it."""
    r = await _load(session, principal, message_id)
    entry = _opened(r)
    if entry.status in ("processed", "duplicate"):
        raise Conflict("This message was applied already; replaying it would change nothing.",
                       code="hl7-already-processed")
    integration = await identity.integration(session, r.tenant_id, r.api_key_id) if r.api_key_id else None
    if integration is None:
        raise Conflict("The API key that sent this message was revoked; replay it from a new key's feed.",
                       code="hl7-sender-revoked")
    return await ingest(session, integration, entry.body, via="replay", replay_of=entry.id)
