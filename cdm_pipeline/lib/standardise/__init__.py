"""Value standardisers for the staging layer, in Python and as DuckDB SQL functions.

Staging turns raw text exports into clean canonical columns. Every standardiser here has the
same contract, so staging SQL can treat them alike and nothing is ever lost on the way:

* ``(None, None)`` for a missing or blank input;
* ``(clean, None)`` when the value could be standardised;
* ``(original_input, issue_code)`` when it could not: the value is kept exactly as it came and
  flagged, never dropped, so a data steward can see and fix it at the source.

Example:
    >>> standardise_email("  Mailto:<Jane.Doe@Example.COM> ")
    Standardised(value='jane.doe@example.com', issue=None)
    >>> standardise_phone("0000000000", "GB")
    Standardised(value='0000000000', issue='invalid_phone')
"""

from __future__ import annotations

import itertools
import re
import threading
from typing import NamedTuple


class Standardised(NamedTuple):
    """The outcome of standardising one value.

    Attributes:
        value: The canonical value, the original input when ``issue`` is set, or None when the
            input was missing or blank.
        issue: None, or the issue code (one of ``ISSUE_CODES``) saying why ``value`` is raw.
    """

    value: str | None
    issue: str | None


BLANK = Standardised(None, None)

# Invisible characters that copy-paste from web pages and spreadsheets leaves behind. They are
# not whitespace to str.strip() (U+00A0 is), so they are handled explicitly.
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_EDGES = re.compile(f"^[\\s{_ZERO_WIDTH}]+|[\\s{_ZERO_WIDTH}]+$")


def _trim(raw: str) -> str:
    """``raw`` without surrounding whitespace (incl. non-breaking) or zero-width characters."""
    text = raw.strip()
    if text and (text[0] in _ZERO_WIDTH or text[-1] in _ZERO_WIDTH):
        text = _EDGES.sub("", text)
    return text


class _Memo:
    """A bounded cache for values that repeat, which the garbage collector never has to scan.

    A plain dict whose keys and values are only ``str``, ``int`` or None stays untracked by the
    cyclic garbage collector, however large it grows; ``functools.lru_cache`` is tracked and
    every full collection walks all its entries (measured: up to a third of the run time of a
    million-row standardisation). When full, the oldest eighth of the entries is dropped: a
    value still in use is simply computed again once.

    Readers use ``memo.data.get(key)`` directly; ``put`` keeps the size bounded.
    """

    __slots__ = ("_lock", "data", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.data: dict[str, str | int | None] = {}
        self.maxsize = maxsize
        self._lock = threading.Lock()

    def put(self, key: str, value: str | int | None) -> None:
        data = self.data
        if len(data) >= self.maxsize:
            with self._lock:  # DuckDB may call a function from several threads
                if len(data) >= self.maxsize:
                    for old in list(itertools.islice(data, max(1, self.maxsize // 8))):
                        data.pop(old, None)
        data[key] = value

    def clear(self) -> None:
        self.data.clear()


# The submodules import Standardised and the helpers above, so these imports come after them.
from . import countries, emails, names, phones, postcodes  # noqa: E402
from .countries import standardise_country  # noqa: E402
from .emails import standardise_email  # noqa: E402
from .names import standardise_name  # noqa: E402
from .phones import standardise_phone  # noqa: E402
from .postcodes import standardise_postcode  # noqa: E402

ISSUE_CODES: tuple[str, ...] = (emails.ISSUE, phones.ISSUE, names.ISSUE, postcodes.ISSUE, countries.ISSUE)

from .duckdb_functions import register_standardisers  # noqa: E402  (needs ISSUE_CODES)

__all__ = [
    "ISSUE_CODES",
    "Standardised",
    "register_standardisers",
    "standardise_country",
    "standardise_email",
    "standardise_name",
    "standardise_phone",
    "standardise_postcode",
]
