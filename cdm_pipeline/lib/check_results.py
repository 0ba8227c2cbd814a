"""What a check of a built table found, as plain values: the Dagster layer turns it into an
``AssetCheckResult`` (identity's and the marts' checks; staging's gate keeps its GX outcomes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``counts`` become the check's metadata, ``detail`` its one-line finding
    (counts and names only, never a value)."""

    name: str
    passed: bool
    counts: dict[str, int]
    detail: str
