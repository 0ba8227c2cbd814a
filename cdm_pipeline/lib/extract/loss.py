"""What a run's extract lost, per partition: lines the reader rejected, and days with no file.

The verdicts are computed from the loads of the run itself. A partition is replaced whole every
time it loads, so re-running it with a corrected file judges the corrected file only: the check
that failed passes, with nothing to reset.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from cdm_pipeline.config import exceeds_loss_limit
from cdm_pipeline.lib.extract.load import PartitionLoad


@dataclass(frozen=True)
class PartitionShare:
    partition_date: dt.date
    rejects: int
    records: int  # rows loaded + lines rejected

    @property
    def share(self) -> float:
        return self.rejects / self.records if self.records else 0.0

    def over(self, limit: float) -> bool:
        return exceeds_loss_limit(self.rejects, self.records, limit)

    def describe(self) -> str:
        return f"{self.partition_date}: {percent(self.share)} ({self.rejects} of {self.records} records)"


@dataclass(frozen=True)
class RejectShareVerdict:
    """Partitions whose rejected share of records is above ``limit``, and why lines failed."""

    limit: float
    partitions: list[PartitionShare]
    over_limit: list[PartitionShare]
    top_error_types: list[tuple[str, int]]  # in the partitions over the limit, most frequent first

    @property
    def passed(self) -> bool:
        return not self.over_limit

    @property
    def worst(self) -> PartitionShare | None:
        return max(self.partitions, key=lambda p: (p.share, p.partition_date), default=None)


def judge_rejected_shares(loads: list[PartitionLoad], limit: float, top: int = 3) -> RejectShareVerdict:
    """Each partition's share rejected / (rows + rejected) against ``limit``.

    Above the limit fails once ``MIN_LOST`` lines are lost, or when every record is. Rows of
    erased people (the suppression list) count on neither side: they were never meant to load.
    """
    partitions = [PartitionShare(load.partition_date, load.rejects, load.records) for load in loads]
    over = [p for p in partitions if p.over(limit)]
    over_dates = {p.partition_date for p in over}
    errors: Counter[str] = Counter()
    for load in loads:
        if load.partition_date in over_dates:
            errors.update(load.rejects_by_error)
    return RejectShareVerdict(limit, partitions, over, sorted(errors.items(), key=lambda e: (-e[1], e[0]))[:top])


def partitions_without_files(loads: list[PartitionLoad]) -> list[dt.date]:
    """The partitions for which no file matched the source's path (a dated source's missing night)."""
    return sorted(load.partition_date for load in loads if load.files == 0)


def percent(share: float) -> str:
    """``0.05`` -> ``5%``, ``0.0125`` -> ``1.25%``."""
    return f"{round(share * 100, 2):g}%"
