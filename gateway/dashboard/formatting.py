"""How the pages write numbers, credits and times (pure)."""

from __future__ import annotations

import datetime

from gateway.accounting.money import to_credits


def number(value: float) -> str:
    """A number with thousands separators and at most 6 decimals, trailing zeros dropped."""
    text = f"{value:,.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def credits(micro: int | None) -> str:
    """Micro-credits as credits (`—` for none)."""
    return "—" if micro is None else number(to_credits(micro))


def when(moment: datetime.datetime | None) -> str:
    """A UTC time to the second (`—` for never)."""
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")
