"""Money for people. Amounts are integer minor units with an ISO 4217 currency everywhere; this
only turns them into text (3150 INR -> "₹31.50"), for pages, messages and PDFs."""

from __future__ import annotations

SYMBOLS = {"INR": "₹", "EUR": "€", "USD": "$", "GBP": "£"}
# Currencies without minor units (ISO 4217 exponent 0); every other one here has two.
NO_DECIMALS = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX"})


def _digits(minor: int, currency: str) -> str:
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if currency in NO_DECIMALS:
        return f"{sign}{minor:,}"
    return f"{sign}{minor // 100:,}.{minor % 100:02d}"


def money(minor: int, currency: str) -> str:
    digits = _digits(minor, currency)
    symbol = SYMBOLS.get(currency, currency + " ")
    return f"-{symbol}{digits[1:]}" if digits.startswith("-") else f"{symbol}{digits}"


def plain(minor: int, currency: str) -> str:
    """The same amount with the ISO code, for PDFs (their core fonts have no ₹): "INR 31.50"."""
    return f"{currency} {_digits(minor, currency)}"
