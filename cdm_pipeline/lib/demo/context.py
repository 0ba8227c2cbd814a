"""What every generator needs to know about the chunk it works on: period, rng streams, id keys.

Each chunk gets its own random streams derived from ``SeedSequence(seed)`` and the chunk index,
one stream per concern (people, CRM, e-mail, web ...). Chunks are therefore independent and
reproducible on their own, and a change in how one module draws numbers does not shift the
numbers every other module sees.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from .ids import id_keys

SECONDS_PER_DAY = 86_400
_STREAMS = ("people", "crm", "variants", "email", "web", "orders", "malformed", "profile", "json_errors")


@dataclass(frozen=True)
class Period:
    """The simulated daily partitions: ``start_date`` .. ``start_date + days - 1``."""

    start_date: dt.date
    days: int

    @property
    def start_day(self) -> int:
        """Days since 1970-01-01 of the first partition."""
        return (self.start_date - dt.date(1970, 1, 1)).days

    @property
    def start_ts(self) -> int:
        return self.start_day * SECONDS_PER_DAY

    @property
    def end_ts(self) -> int:
        """First second after the last partition."""
        return self.start_ts + self.days * SECONDS_PER_DAY

    def day_start(self, day: np.ndarray | int) -> np.ndarray:
        return self.start_ts + np.asarray(day, dtype=np.int64) * SECONDS_PER_DAY

    def day_of(self, ts: np.ndarray) -> np.ndarray:
        """Partition index of unix-second timestamps (0 for anything before the period)."""
        day = (np.asarray(ts, dtype=np.int64) - self.start_ts) // SECONDS_PER_DAY
        return np.clip(day, 0, self.days - 1)

    def labels(self) -> list[str]:
        return [(self.start_date + dt.timedelta(days=d)).isoformat() for d in range(self.days)]


@dataclass(frozen=True)
class IdKeys:
    """Seed-dependent keys for the id bijections (one per id family)."""

    contact: int
    subscriber: int
    order: int
    email_event: int
    web_event: int
    session: int
    client: int
    phone: int

    @classmethod
    def from_seed(cls, seed: int) -> IdKeys:
        return cls(*(int(k) for k in id_keys(seed, 8)))


@dataclass(frozen=True)
class Chunk:
    """One slice of people ``[first_person, first_person + size)`` and its random streams."""

    index: int
    first_person: int
    size: int
    population: int  # people in the whole simulation (all chunks)
    period: Period
    seed: int
    keys: IdKeys

    def rng(self, stream: str) -> np.random.Generator:
        """An independent generator for one concern of this chunk."""
        seq = np.random.SeedSequence(self.seed, spawn_key=(1, self.index, _STREAMS.index(stream)))
        return np.random.Generator(np.random.PCG64(seq))


def time_of_day(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Seconds after midnight following a plausible daily rhythm.

    ``office``: CRM data entry, mostly 8:00-19:00. ``leisure``: web visits, a lunchtime and a
    long evening peak that runs past midnight (so some sessions cross into the next day).
    """
    if kind == "office":
        hours = 7.5 + 12.0 * rng.beta(2.6, 2.6, n)
    else:
        evening = rng.random(n) < 0.6
        hours = np.where(evening, rng.normal(21.0, 2.2, n), rng.normal(12.5, 3.0, n)) % 24.0
    return (hours * 3600).astype(np.int64)
