"""How a warehouse step fails: one clean line, no personal values, no pointless retries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from cdm_pipeline.lib.disk_space import describe_full_disk
from cdm_pipeline.lib.warehouse import safe_error_message


def fail_if_disk_full(exc: BaseException, folder: Path | None = None) -> None:
    """Fail the step, with no retry, saying which disk is full, when ``exc`` is (or hides) a full disk.

    ``folder`` is named when the error itself names no file. A retry would only fill the disk again.
    """
    message = describe_full_disk(exc, folder)
    if message is not None:
        raise dg.Failure(description=message, allow_retries=False) from None


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
