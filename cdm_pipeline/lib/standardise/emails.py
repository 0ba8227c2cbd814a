"""E-mail addresses: trimmed, unwrapped, lower-cased and syntax-checked.

The e-mail address is the strongest identity key across CRM, e-mail platform and web
analytics, so every source must spell the same address the same way. Whole addresses are
lower-cased: local parts are case-sensitive in theory, but no mainstream provider treats them
so, and ``Jane.Doe@`` vs ``jane.doe@`` is the most common near-duplicate in exports.

The syntax check is practical rather than RFC 5322-complete: it accepts what real mailboxes use
(``+tags``, apostrophes, internationalised letters) and rejects what forms let through (no @,
spaces, missing TLD). It deliberately does not correct typos (``gmial.com``) or judge junk
(``test@test.com``): a later identity stage owns those decisions.
"""

from __future__ import annotations

import re
import unicodedata

from . import BLANK, Standardised, _trim

ISSUE = "invalid_email"

_MAX_LOCAL = 64
_MAX_ADDRESS = 254
# Characters that wrap addresses in exports: <angle brackets>, "quotes", 'quotes', «guillemets».
_WRAPPERS = "<>\"'`“”‘’«»"
_INVISIBLE = str.maketrans("", "", "\u200b\u200c\u200d\u2060\ufeff\u00ad")

# Dot-atom local part (RFC 5322 atext) and host names of letter/digit/hyphen labels. Non-ASCII
# letters are mapped to "a" before matching (see _ascii_shape), which keeps this one pattern.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ADDRESS = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})",
)


def _ascii_shape(text: str) -> str:
    """``text`` with every non-ASCII letter, digit or combining mark replaced by ``a``.

    Internationalised addresses (``josé@bücher.de``) then pass the ASCII pattern, while other
    non-ASCII characters (symbols, punctuation, spaces) still fail it.
    """
    return "".join(
        ch if ch < "\x80" else ("a" if ch.isalnum() or unicodedata.category(ch)[0] == "M" else ch)
        for ch in text
    )


def _unwrap(text: str) -> str:
    """Remove what exports wrap around an address: mailto:, <...>, quotes, a display name."""
    for _ in range(3):  # "<mailto:x@y>" and '"mailto:x@y"' need more than one pass
        before = text
        if text[:7].lower() == "mailto:":
            text = text[7:].partition("?")[0]  # a mailto: link may carry ?subject=...
        if text.endswith(">") and "<" in text:
            # "Jane Doe <jane@x.com>": the address is what the angle brackets hold.
            text = text[text.rindex("<") + 1 : -1]
        text = text.strip(_WRAPPERS).strip()
        if text == before:
            break
    return text


def standardise_email(raw: str | None) -> Standardised:
    """Standardise an e-mail address.

    Args:
        raw: The address as exported, e.g. ``" Mailto:<Jane.Doe@Example.COM> "``.

    Returns:
        ``("jane.doe@example.com", None)`` for a usable address; ``(raw, "invalid_email")``
        when the result is not a plausible address; ``(None, None)`` for None or blank input.
    """
    if raw is None:
        return BLANK
    text = _trim(raw)
    if not text:
        return BLANK
    if not text.isascii():
        # Full-width letters and ligatures to plain ones (NFKC), invisible characters out.
        text = _trim(unicodedata.normalize("NFKC", text).translate(_INVISIBLE))
    text = _unwrap(text).lower()
    local, at, _domain = text.partition("@")
    if (
        not at
        or len(local) > _MAX_LOCAL
        or len(text) > _MAX_ADDRESS
        or not _ADDRESS.fullmatch(text if text.isascii() else _ascii_shape(text))
    ):
        return Standardised(raw, ISSUE)
    return Standardised(text, None)
