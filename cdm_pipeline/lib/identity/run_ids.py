"""Whose resolution a row of ``identity.resolution_runs`` is: a Dagster run's, an erasure's or a
re-link's (``cdm identity relink``).

A re-resolution after an erasure is logged under an id of its own, never a Dagster run's:
reports, and the signals that compare a night with the one before, skip these ids when they
look for runs. Privacy operations (lib/privacy/erasure.py, above identity) name their
re-resolutions with the functions here.
"""

from __future__ import annotations


def erasure_resolution_id(request_id: str) -> str:
    """The id of the re-resolution after an erasure from the command line."""
    return f"privacy-{request_id}"


def queue_resolution_id(run_id: str) -> str:
    """The id of the re-resolution after the erasures of a run's request queue."""
    return f"{run_id}-privacy"


def relink_resolution_id(stamp: str, suffix: str) -> str:
    """The id of a full re-link asked for with ``cdm identity relink``."""
    return f"relink-{stamp}-{suffix}"


# True for a resolution_runs row whose run_id one of the erasure functions above made.
IS_ERASURE_RESOLUTION_SQL = "(run_id LIKE 'privacy-%' OR run_id LIKE '%-privacy')"
# True for any row that is no Dagster run's (an erasure's or a command's re-resolution).
IS_COMMAND_RESOLUTION_SQL = f"({IS_ERASURE_RESOLUTION_SQL} OR run_id LIKE 'relink-%')"
