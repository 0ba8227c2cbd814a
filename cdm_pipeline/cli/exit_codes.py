"""The exit statuses of every ``cdm`` command, and the refusal that carries one to ``main``.

- ``EXIT_OK`` (0): done.
- ``EXIT_FAILED`` (1): a run, a step or the command's own work failed, or the warehouse is in use
  by another process (worth trying again later).
- ``EXIT_USAGE`` (2): a usage or configuration mistake, or something the command needs does not
  exist yet (no warehouse: run the pipeline first). Nothing to retry until the person acts.

A refusal is one line on stderr, ``cdm: error: ...``, and no traceback.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A command's one-line refusal: ``cdm_pipeline.cli.main`` prints ``<prefix>: <message>`` on stderr
    and exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE, prefix: str = "cdm: error"):
        super().__init__(message)
        self.status = status
        self.prefix = prefix
