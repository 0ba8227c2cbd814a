"""How a warehouse step fails: one clean line, no personal values, no pointless retries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

from cdm_pipeline.lib.warehouse import safe_error_message


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
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except Exception as exc:
        raise dg.Failure(
            description=f"{step}: {exc.__class__.__name__}: {safe_error_message(exc)}",
            allow_retries=False,
        ) from None
