"""PHI stripping: what a patient types is de-identified before any of it leaves for a model.

Two kinds of detector, both replacing what they find with a token (``[NAME_1]``, ``[PHONE_2]``):

* **the patient's own record**: their names and family members' names, phone (in any formatting),
  e-mail, address and its parts, birth date (in any common format), record numbers and ids. These
  are known exactly, so they are found exactly, whatever the wording around them;
* **patterns** for everyone else's: phone numbers, e-mail addresses, dates (not durations), ids
  (policy, passport, Aadhaar- and SSN-shaped numbers), street addresses and postcodes, ages over
  89 (HIPAA Safe Harbor lets ages up to 89 through), and people introduced by a title or a
  relation ("Dr. Meera Nair", "my neighbour Suresh").

The **mapping** from token to original stays on the server (with the consultation); the model sees
only tokens, and its answer is re-identified for display. The same original gets the same token
for the whole consultation, so the model can still follow "[NAME_1]'s husband".

The patient's age travels as a bracket (``30-39``, ``90+``), as the seed asks.

Recall is measured on a corpus of 220+ messages with planted identifiers (tests/consult/
phi_corpus.json; ``./dev bench --only phi`` prints it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from carebase.patients.service import age_in_years

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_ORD = r"(?:st|nd|rd|th)?"


@dataclass(frozen=True)
class Identity:
    """What the record knows about the patient (and the people on it)."""
    given_name: str = ""
    family_name: str = ""
    other_names: tuple[str, ...] = ()  # family members, emergency contacts
    phone: str | None = None
    other_phones: tuple[str, ...] = ()  # an emergency contact's
    email: str | None = None
    address: str | None = None
    birth_date: date | None = None
    ids: tuple[str, ...] = ()  # MRN, national id, global id, …


@dataclass
class Mapping:
    """Token → original, kept server-side for one consultation."""
    tokens: dict[str, str] = field(default_factory=dict)
    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)

    def token_for(self, kind: str, original: str) -> str:
        key = (kind, _norm(original))
        token = self._by_value.get(key)
        if token is None:
            n = sum(1 for k, _ in self._by_value if k == kind) + 1
            token = f"[{kind}_{n}]"
            self._by_value[key] = token
            self.tokens[token] = original
        return token

    def to_json(self) -> dict[str, str]:
        return dict(self.tokens)

    @classmethod
    def from_json(cls, tokens: dict[str, str]) -> Mapping:
        m = cls()
        for token, original in tokens.items():
            m.tokens[token] = original
            m._by_value[(token[1:].rsplit("_", 1)[0], _norm(original))] = token
        return m


def _norm(s: str) -> str:
    return re.sub(r"\W+", "", s.casefold())


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


# -- detectors: each yields (start, end, kind) ---------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.I)
# A run of digits with the separators phone numbers are written with; judged by its digit count.
_PHONEISH = re.compile(r"(?<![\w/])\+?\(?\d[\d\s().-]{5,}\d(?![\w/])")
_DATE_PATTERNS = [
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b"),
    re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b"),
    re.compile(rf"\b\d{{1,2}}{_ORD}\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+\d{{4}})?", re.I),
    re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}{_ORD}\b(?:,?\s+\d{{4}})?", re.I),
    re.compile(rf"\b{_MONTH}\s+\d{{4}}\b", re.I),  # "March 1988": month and year together
]
_AGE_OVER_89 = re.compile(
    r"\b(?:(?:aged?|age of)\s+(?:9\d|1[01]\d)\b(?:\s*(?:years?|yrs?)(?:\s*old)?)?"
    r"|(?:9\d|1[01]\d)\s*(?:-\s*)?(?:years?|yrs?|y/?o)\b(?:\s+of\s+age|[\s-]*old)?)", re.I)
_STREET_WORDS = (r"(?:road|rd|street|st|lane|ln|avenue|ave|nagar|marg|colony|layout|cross|main|drive|dr|boulevard"
                 r"|blvd|way|place|pl|court|ct|terrace|close|crescent|gardens|park|square|sector|block|enclave|vihar"
                 r"|bagh|chowk|highway|hwy|view|hill|row|walk|mews|green|rise|grove|heights|pkwy|parkway|circle|cir"
                 r"|puram|pet|halli|palya|wadi|gali|path)")
_US_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH"
              "|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC")
_ADDRESS_PATTERNS = [
    # "221B Baker Street", "45 MG Road", "12, 3rd Cross Road"
    re.compile(rf"\b\d{{1,5}}(?:[A-Za-z]|st|nd|rd|th)?(?:/\d+)?,?\s+(?:[A-Z0-9][\w.'-]*\s+){{0,3}}{_STREET_WORDS}\b\.?"
               r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?", re.I),
    # "Flat 3", "Apt 4B", "House No. 12", "Plot 7", "Door no 5"
    re.compile(r"\b(?:flat|apt|apartment|house|h\.?\s?no|plot|door|unit|suite|no)\.?\s*(?:no\.?\s*)?#?\s*\d+[A-Za-z]?"
               r"(?:/\d+)?\b", re.I),
    # Indian PIN code after a place name, UK postcode, US ZIP after a state code
    re.compile(r"(?<=[A-Za-z],\s)\d{6}\b|(?<=[A-Za-z]\s)\d{6}\b|(?<=[A-Za-z]-)\d{6}\b"),
    re.compile(r"\b[A-Z]-\d{1,4}[A-Z]?\b", re.I),  # B-204
    re.compile(r"\b(?:sector|block|phase|ward)\s*-?\s*\d+[A-Z]?\b", re.I),
    re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b", re.I),
    re.compile(rf"\b(?:{_US_STATES})\s\d{{5}}(?:-\d{{4}})?\b", re.I),
]
# Numbers that are ids: a label before them, or shapes no dose or reading has.
_ID_PATTERNS = [
    re.compile(r"(?i:\b(?:(?:id|no|num|number|policy|passport|aadhaar|aadhar|pan|ssn|insurance|member|mrn|uhid"
               r"|licen[cs]e|account|card|ref|reference)\b\.?\s*)+[:#-]?\s*)"
               r"((?i:[A-Z0-9](?:[A-Z0-9/-]*[A-Z0-9])?))"),
    re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),  # SSN
    re.compile(r"\b\d{4}\s\d{4}\s\d{4}\b"),  # Aadhaar
    re.compile(r"\b[A-Z]{2,}(?:-[A-Z0-9]+)*-\d[A-Z0-9-]*\b", re.I),  # HDF-2231-889, MRN-004512, WXQ-IN-…
    re.compile(r"\b[A-Z]{1,5}\d{5,}[A-Z]?\b", re.I),  # K1234567, ABCDE1234F, uhc908445127
    re.compile(r"\b\d{9,}\b"),
]
_TITLES = r"(?:dr|doctor|mr|mrs|ms|miss|prof|sister|nurse|sri|shri|smt)"
_RELATIONS = (r"(?:wife|husband|son|daughter|mother|mom|mum|father|dad|brother|sister|bro|sis|neighbou?r|friend"
              r"|colleague|boss|uncle|aunt|aunty|auntie|cousin|grandmother|grandfather|granny|grandma|grandpa"
              r"|nephew|niece|partner|fianc[eé]e?|maid|driver|landlord|landlady|roommate|flatmate|teacher|manager"
              r"|coworker|co-worker|classmate|doctor|physician|specialist|dentist|gp|therapist|pharmacist)")
_CAP = r"[A-Z][a-zA-Z'’-]+"
_LOWER = r"[a-z][a-z'’-]+"
_NAME_PATTERNS = [
    re.compile(rf"\b(?i:{_TITLES})\.?\s+({_CAP}(?:\s+{_CAP}){{0,2}})"),
    re.compile(rf"\b(?i:my|our|his|her)\s+(?i:{_RELATIONS})(?:'s)?,?\s+({_CAP}(?:\s+{_CAP}){{0,2}})"),
    re.compile(rf"\b(?i:my name is|name's|this is|i am|i'm|it's|its|call me|named|called)\s+"
               rf"({_CAP}(?:\s+{_CAP}){{0,2}})"),
    re.compile(rf"\b({_CAP}(?:\s+{_CAP}){{0,2}}),?\s+(?i:my|our)\s+(?i:{_RELATIONS})\b"),
    # Typed all in lowercase: the same places, up to two words that are not everyday English.
    re.compile(rf"\b(?:dr|doctor|prof)\.?\s+({_LOWER}(?:\s+{_LOWER})?)"),
    re.compile(rf"\b(?:my|our|his|her)\s+{_RELATIONS}(?:'s)?,?\s+({_LOWER}(?:\s+{_LOWER})?)"),
]
# Capitalised words the name patterns must not take for names ("I am Diabetic", "this is Urgent").
_NOT_NAMES = {
    "i", "im", "a", "an", "the", "not", "very", "so", "really", "just", "also", "still", "feeling", "having",
    "diabetic", "pregnant", "allergic", "asthmatic", "worried", "scared", "sick", "ill", "fine", "ok", "okay",
    "better", "worse", "urgent", "sorry", "here", "there", "back", "again", "today", "tomorrow", "yesterday",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "hello", "hi", "hey", "thanks",
    "thank", "please", "since", "from", "on", "in", "at", "taking", "using", "suffering", "experiencing",
    "getting", "going", "unable", "able", "confused", "dizzy", "tired", "breathless", "vomiting", "bleeding",
    "type", "on", "off", "about", "around", "nearly", "almost", "over", "under", "told", "said", "says",
    "paracetamol", "ibuprofen", "covid", "google", "whatsapp",
    # everyday words that follow "my friend", "dr." in lowercase messages
    "has", "had", "have", "is", "was", "are", "were", "be", "been", "will", "would", "can", "could", "should",
    "may", "might", "must", "did", "does", "do", "and", "or", "but", "who", "which", "that", "this", "these",
    "said", "says", "say", "told", "tells", "asked", "asks", "wants", "wanted", "needs", "needed", "thinks",
    "thought", "took", "takes", "gave", "gives", "brought", "called", "calls", "came", "comes", "went", "goes",
    "got", "gets", "lives", "lived", "works", "worked", "died", "passed", "recommended", "recommends",
    "suggested", "suggests", "advised", "advises", "prescribed", "prescribes", "referred", "refers", "checked",
    "saw", "sees", "seen", "visited", "mentioned", "noticed", "thinks", "feels", "felt", "keeps", "kept",
    "with", "for", "to", "of", "by", "as", "if", "when", "because", "too", "had", "hasnt", "isnt", "wasnt",
    "doesnt", "dont", "didnt", "cant", "wont", "who's", "she", "he", "they", "we", "you", "it", "her", "his",
    "their", "our", "my", "me", "him", "them", "us", "said,", "office", "clinic", "hospital", "appointment",
    "prescription", "report", "reports", "results", "number", "phone", "email", "sent", "send", "sends", "gp",
    "now", "then", "who", "whose", "recently", "usually", "always", "never", "sometimes", "same", "other",
    "new", "old", "first", "last", "next", "all", "both", "each", "some", "any", "no", "one", "two", "three",
    "has,", "cough", "fever", "pain", "diabetes", "sugar", "bp", "cold", "flu", "medicine", "medicines",
    "tablets", "tablet", "pills", "dose", "doctor", "dr", "nurse", "says,", "please", "pls", "plz", "kindly",
    "place", "moved", "home", "house", "flat", "room", "side", "family", "kids", "children", "baby",
}


def _own_spans(text: str, who: Identity) -> Iterable[tuple[int, int, str]]:
    names = {who.given_name, who.family_name, f"{who.given_name} {who.family_name}"}
    for other in who.other_names:
        names.add(other)
        names.update(other.split())
    for name in sorted((n.strip() for n in names if n and len(n.strip()) >= 2), key=len, reverse=True):
        for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I):
            yield m.start(), m.end(), "NAME"
    if who.email:
        for m in re.finditer(re.escape(who.email), text, re.I):
            yield m.start(), m.end(), "EMAIL"
    for phone in (who.phone, *who.other_phones):
        if not phone or len(_digits(phone)) < 7:
            continue
        national = _digits(phone)[-10:]
        for m in _PHONEISH.finditer(text):
            d = _digits(m.group())
            if len(d) >= 7 and (national.endswith(d) or d.endswith(national)):
                yield m.start(), m.end(), "PHONE"
    if who.address:
        for part in _address_parts(who.address):
            for m in re.finditer(rf"(?<!\w){re.escape(part)}(?!\w)", text, re.I):
                yield m.start(), m.end(), "ADDRESS"
    for ident in who.ids:
        compact = _norm(ident)
        if len(compact) < 4:
            continue
        # The id with any separators, or none, between its characters.
        loose = r"[\s-]?".join(re.escape(c) for c in compact)
        for m in re.finditer(rf"(?<!\w){loose}(?!\w)", text, re.I):
            yield m.start(), m.end(), "ID"
        # Its digits alone, when they are distinctive enough (an MRN typed without its prefix).
        digits = _digits(ident)
        if len(digits) >= 6:
            loose = r"[\s-]?".join(digits)
            for m in re.finditer(rf"(?<!\d){loose}(?!\d)", text):
                yield m.start(), m.end(), "ID"
    if who.birth_date:
        for variant in _date_variants(who.birth_date):
            for m in re.finditer(rf"(?<!\w){re.escape(variant)}(?!\w)", text, re.I):
                yield m.start(), m.end(), "DATE"


def _address_parts(address: str) -> list[str]:
    parts = set()
    for part in re.split(r"[,\n]", address):
        part = part.strip()
        if len(part) < 4:
            continue
        parts.add(part)
        street = re.sub(r"^\d+[A-Za-z]?\s+", "", part)  # "Lavelle Road" without its number
        if street != part and len(street) >= 5:
            parts.add(street)
        place = re.sub(r"\s*\b\d{4,6}\b\s*", " ", part).strip()  # "Bengaluru" without its PIN
        if place != part and len(place) >= 4:
            parts.add(place)
        for code in re.findall(r"\b\d{5,6}\b", part):
            parts.add(code)
    return sorted(parts, key=len, reverse=True)


def _date_variants(d: date) -> list[str]:
    month = MONTHS[d.month - 1]
    day_ord = f"{d.day}{_ordinal(d.day)}"
    out = []
    for day in (str(d.day), f"{d.day:02d}", day_ord):
        for mon in (month, month[:3], month[:3] + "."):
            out += [f"{day} {mon} {d.year}", f"{day} {mon}, {d.year}", f"{day} of {mon} {d.year}",
                    f"{mon} {day}, {d.year}", f"{mon} {day} {d.year}", f"{day}-{mon}-{d.year}"]
    for sep in "/-.":
        for dd, mm in ((str(d.day), str(d.month)), (f"{d.day:02d}", f"{d.month:02d}")):
            out += [f"{dd}{sep}{mm}{sep}{d.year}", f"{mm}{sep}{dd}{sep}{d.year}",
                    f"{dd}{sep}{mm}{sep}{d.year % 100:02d}"]
    out.append(d.isoformat())
    return out


def _ordinal(n: int) -> str:
    return "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


# "1190 Broadway": a number and a name is an address only next to a part that surely is one.
_WEAK_ADDRESS = re.compile(r"\b\d{1,5}[A-Za-z]?\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)?(?=,)")
# What may lie between two parts of one address ("…Street, Madurai 625020"): a few words.
_ADDRESS_GAP = re.compile(r"[\s,]*(?:[\w'.-]+[\s,]+){0,3}")
_PLACE_AFTER = re.compile(r",\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)?\b")


def _join_addresses(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Parts of one address become one span: the parts, the few words between them, and a
    capitalised place name right after ("301 Elm St, Springfield")."""
    weak = [(m.start(), m.end(), "ADDRESS?") for m in _WEAK_ADDRESS.finditer(text)]
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans + weak):
        if merged and kind.startswith("ADDRESS") and merged[-1][2].startswith("ADDRESS") \
                and start >= merged[-1][1] and _ADDRESS_GAP.fullmatch(text, merged[-1][1], start):
            prev = merged.pop()
            merged.append((prev[0], max(end, prev[1]), "ADDRESS" if "ADDRESS" in (kind, prev[2]) else "ADDRESS?"))
        else:
            merged.append((start, end, kind))
    out = []
    for start, end, kind in merged:
        if kind == "ADDRESS?":
            continue
        if kind == "ADDRESS" and (m := _PLACE_AFTER.match(text, end)):
            end = m.end()
        out.append((start, end, kind))
    return out


def _pattern_spans(text: str) -> Iterable[tuple[int, int, str]]:
    for m in _EMAIL.finditer(text):
        yield m.start(), m.end(), "EMAIL"
    for p in _DATE_PATTERNS:
        for m in p.finditer(text):
            yield m.start(), m.end(), "DATE"
    for m in _AGE_OVER_89.finditer(text):
        yield m.start(), m.end(), "AGE"
    for p in _ADDRESS_PATTERNS:
        for m in p.finditer(text):
            yield m.start(), m.end(), "ADDRESS"
    for p in _ID_PATTERNS:
        for m in p.finditer(text):
            start, end = (m.start(1), m.end(1)) if m.groups() else (m.start(), m.end())
            value = text[start:end]
            if sum(c.isdigit() for c in value) >= 3 or (m.groups() and len(value) >= 5 and any(c.isdigit()
                                                                                              for c in value)):
                yield start, end, "ID"
    for m in _PHONEISH.finditer(text):
        if 8 <= len(_digits(m.group())) <= 15 and not re.fullmatch(r"\d{1,3}/\d{1,3}", m.group()):
            yield m.start(), m.end(), "PHONE"
    for p in _NAME_PATTERNS:
        for m in p.finditer(text):
            words = m.group(1).split()
            while words and words[-1].casefold().strip("'’") in _NOT_NAMES:
                words.pop()
            if words and words[0].casefold() not in _NOT_NAMES:
                start = m.start(1)
                yield start, start + len(" ".join(words)), "NAME"


def find(text: str, identity: Identity | None = None) -> list[tuple[int, int, str]]:
    """Every identifier in ``text``: (start, end, kind), in order, none overlapping."""
    spans = list(_own_spans(text, identity)) if identity else []
    spans += _pattern_spans(text)
    spans = _join_addresses(text, [sp for sp in spans if sp[2] == "ADDRESS"]) + [sp for sp in spans
                                                                             if sp[2] != "ADDRESS"]
    # Longest first, then earliest; overlapping spans merge into the first one taken.
    spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
    taken: list[tuple[int, int, str]] = []
    for start, end, kind in spans:
        if start >= end:
            continue
        overlaps = [t for t in taken if t[0] < end and start < t[1]]
        if overlaps:
            # Grow the span already taken to cover both (a phone inside a longer address line).
            for t in overlaps:
                taken.remove(t)
            start = min([start] + [t[0] for t in overlaps])
            end = max([end] + [t[1] for t in overlaps])
            kind = overlaps[0][2]
        taken.append((start, end, kind))
    return sorted(taken)


def strip(text: str, identity: Identity | None = None, mapping: Mapping | None = None) -> tuple[str, Mapping]:
    """``text`` with every identifier found replaced by its token, and the mapping (extended in
    place when given: one mapping per consultation)."""
    mapping = mapping if mapping is not None else Mapping()
    out, last = [], 0
    for start, end, kind in find(text, identity):
        out.append(text[last:start])
        out.append(mapping.token_for(kind, text[start:end]))
        last = end
    out.append(text[last:])
    return "".join(out), mapping


_TOKEN = re.compile(r"\[(?:NAME|PHONE|EMAIL|DATE|ID|ADDRESS|AGE)_\d+\]")


def reidentify(text: str, mapping: Mapping) -> str:
    """A model's answer with the tokens put back, for display to the people entitled to see it."""
    return _TOKEN.sub(lambda m: mapping.tokens.get(m.group(), m.group()), text)


def age_bracket(birth_date: date | None, today: date) -> str | None:
    """A decade bracket (``30-39``); 90 and over collapse to ``90+`` (HIPAA Safe Harbor)."""
    age = age_in_years(birth_date, today)
    if age is None:
        return None
    if age >= 90:
        return "90+"
    if age < 1:
        return "under 1"
    low = age // 10 * 10
    return f"{low}-{low + 9}" if low else "1-9"
