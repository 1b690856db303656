"""Kubernetes resource quantities ("500Gi", "1.5", "250m") as exact numbers."""

from __future__ import annotations

import decimal
import re

_SUFFIXES: dict[str, decimal.Decimal] = {
    "": decimal.Decimal(1),
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "k": decimal.Decimal(10) ** 3,
    "M": decimal.Decimal(10) ** 6,
    "G": decimal.Decimal(10) ** 9,
    "T": decimal.Decimal(10) ** 12,
    "P": decimal.Decimal(10) ** 15,
    "E": decimal.Decimal(10) ** 18,
    "Ki": decimal.Decimal(2) ** 10,
    "Mi": decimal.Decimal(2) ** 20,
    "Gi": decimal.Decimal(2) ** 30,
    "Ti": decimal.Decimal(2) ** 40,
    "Pi": decimal.Decimal(2) ** 50,
    "Ei": decimal.Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^\+?(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$")


def parse(value: int | str) -> decimal.Decimal:
    """The quantity's exact value; ValueError (naming the value) when it is not a quantity."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity {value} is negative")
        return decimal.Decimal(value)
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500Gi, 2, 250m)")
    number = decimal.Decimal(match["num"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        return number * (decimal.Decimal(10) ** int(suffix[1:]))
    return number * _SUFFIXES[suffix]


def to_bytes(value: int | str) -> int:
    """Whole bytes, rounded up: a quota is never smaller than asked."""
    return int(parse(value).to_integral_value(rounding=decimal.ROUND_CEILING))


MAX_CANONICAL = decimal.Decimal(2**63 - 1)
"""The API server clamps quantities to this (e.g. 999999999999999999999999Ti reads back as 9223372036854775807)."""
MILLI = decimal.Decimal("0.001")


def canonical(value: int | str) -> decimal.Decimal:
    """The value as the API server stores it: rounded up to a thousandth (0.001m reads back as 1m, 1.0005 as
    1001m) and clamped to 2^63-1. Compare desired and observed quantities through this, or a value the
    server normalises differs forever."""
    amount = parse(value)
    if amount >= MAX_CANONICAL:
        return MAX_CANONICAL
    return amount.quantize(MILLI, rounding=decimal.ROUND_CEILING)
