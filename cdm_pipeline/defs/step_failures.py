"""How a warehouse step fails: one clean line, no personal values, no pointless retries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from cdm_pipeline.lib.disk_space import describe_full_disk
from cdm_pipeline.lib.encryption import EncryptionError
from cdm_pipeline.lib.warehouse import safe_error_message

# DuckDB's words for a warehouse file that cannot be read as it is: corrupt, not a database, or
# encrypted under another key. Retrying reads the same bytes again (the probe's corrupt file cost
# 6.5 minutes of retries before the run failed).
_UNREADABLE_WAREHOUSE = (
    "not a valid DuckDB database file", "Corrupt database file", "checksum", "Wrong encryption key",
    "without a key",
)


def fail_if_disk_full(exc: BaseException, folder: Path | None = None) -> None:
    """Fail the step, with no retry, saying which disk is full, when ``exc`` is (or hides) a full disk.

    ``folder`` is named when the error itself names no file. A retry would only fill the disk again.
    """
    message = describe_full_disk(exc, folder)
    if message is not None:
        raise dg.Failure(description=message, allow_retries=False) from None
    fail_if_unreadable_warehouse(exc)


def fail_if_unreadable_warehouse(exc: BaseException) -> None:
    """Fail the step, with no retry, when ``exc`` is (or hides) a warehouse file that cannot be read."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, EncryptionError) or any(words in str(error) for words in _UNREADABLE_WAREHOUSE):
            raise dg.Failure(
                description=f"the warehouse cannot be read ({safe_error_message(error)}); a retry would read the"
                " same bytes: check it with `cdm warehouse verify`, restore a backup with `cdm restore`",
                allow_retries=False,
            ) from None
        error = error.__cause__ or error.__context__


@contextlib.contextmanager
def fail_cleanly(step: str, expected: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn an exception into a ``dg.Failure`` whose description is safe to show and log.

    ``expected`` errors carry messages written for users and pass through as they are; any
    other error keeps its first line with quoted values masked, because a database or Splink
    message can quote the value it choked on (the full traceback would carry it too).
    """
    try:
        yield
    except expected as exc:
        fail_if_disk_full(exc)
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except Exception as exc:
        fail_if_disk_full(exc)  # the failed ROLLBACK after it must not be what the step reports
        raise dg.Failure(
            description=f"{step}: {exc.__class__.__name__}: {safe_error_message(exc)}",
            allow_retries=False,
        ) from None
