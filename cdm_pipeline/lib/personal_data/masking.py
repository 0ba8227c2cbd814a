"""Masked forms of personal values, for output a person reads (``cdm identity explain``).

Enough survives to tell two records apart at a glance (an initial, the mail provider's first
letter, a phone's last two digits, a birth year), never enough to recover the value.
"""

from __future__ import annotations

import datetime as dt


def mask_name(value: str | None) -> str:
    if not value:
        return "-"
    return value[0] + "*" * max(len(value) - 1, 2)


def mask_email(value: str | None) -> str:
    if not value or "@" not in value:
        return "-" if not value else mask_name(value)
    local, _, domain = value.rpartition("@")
    host, dot, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***{dot}{tld}" if host else f"{local[:1]}***@***"


def mask_phone(value: str | None) -> str:
    if not value:
        return "-"
    digits = [ch for ch in value if ch.isdigit()]
    return ("+" if value.startswith("+") else "") + "*" * max(len(digits) - 2, 2) + "".join(digits[-2:])


def mask_date(value: dt.date | str | None) -> str:
    """The year only: a birth year is shared by a whole cohort."""
    if not value:
        return "-"
    return f"{str(value)[:4]}-**-**"


def mask_text(value: str | None) -> str:
    """Addresses and other free text: their length class, nothing of the content."""
    return "-" if not value else "*" * min(len(value), 8)
