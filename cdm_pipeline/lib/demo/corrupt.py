"""The ways real data goes wrong: typos, case and whitespace noise, junk values, broken lines.

Everything here works on whole arrays. Typos, for instance, are made by viewing the strings as a
matrix of code points and gathering each row through a per-row index map (swap two columns,
skip one, repeat one), so a chunk with thousands of variant records costs a few numpy calls.
"""

from __future__ import annotations

import numpy as np

from .ids import cat
from .names import DOMAIN_TYPOS

_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> tuple[np.ndarray, np.ndarray]:
    # For each ASCII lower-case letter, the letters next to it on a QWERTY keyboard.
    table = np.zeros((128, 4), dtype=np.uint32)
    count = np.zeros(128, dtype=np.int64)
    for r, row in enumerate(_QWERTY_ROWS):
        for c, ch in enumerate(row):
            near = [row[c - 1]] if c > 0 else []
            near += [row[c + 1]] if c + 1 < len(row) else []
            if r + 1 < len(_QWERTY_ROWS) and c < len(_QWERTY_ROWS[r + 1]):
                near.append(_QWERTY_ROWS[r + 1][c])
            if r > 0 and c < len(_QWERTY_ROWS[r - 1]):
                near.append(_QWERTY_ROWS[r - 1][c])
            near = near[:4]
            table[ord(ch), : len(near)] = [ord(x) for x in near]
            count[ord(ch)] = len(near)
    return table, count


_NEAR, _NEAR_COUNT = _keyboard_neighbours()


def typos(rng: np.random.Generator, text: np.ndarray) -> np.ndarray:
    """One typing error per string: transposition, deletion, doubled letter or wrong key.

    The first letter is left alone (people rarely get it wrong, and it keeps typos in the range
    a fuzzy matcher is expected to catch); strings shorter than 3 characters are unchanged.
    """
    text = np.asarray(text).astype(str)
    n = text.size
    if n == 0:
        return text
    length = np.strings.str_len(text).astype(np.int64)
    width = int(length.max()) + 2
    codes = text.astype(f"U{width}").view(np.uint32).reshape(n, width)
    kind = rng.integers(0, 4, n)
    ok = length >= 3
    pos = 1 + (rng.random(n) * np.maximum(length - 2, 1)).astype(np.int64)  # 1 .. len-2
    cols = np.broadcast_to(np.arange(width), (n, width))
    idx = cols.copy()
    rows = np.arange(n)
    swap = ok & (kind == 0)
    idx[rows[swap], pos[swap]] = pos[swap] + 1
    idx[rows[swap], pos[swap] + 1] = pos[swap]
    drop = ok & (kind == 1)
    idx[drop] = np.minimum(cols[drop] + (cols[drop] >= pos[drop, None]), width - 1)
    double = ok & (kind == 2)
    idx[double] = cols[double] - (cols[double] > pos[double, None])
    out = np.take_along_axis(codes, idx, axis=1)
    wrong = np.flatnonzero(ok & (kind == 3))
    if wrong.size:
        orig = out[wrong, pos[wrong]]
        lower = np.where((orig >= 65) & (orig <= 90), orig + 32, orig)
        ascii_letter = (lower < 128) & (_NEAR_COUNT[np.minimum(lower, 127)] > 0)
        pick = (rng.random(wrong.size) * np.maximum(_NEAR_COUNT[np.minimum(lower, 127)], 1)).astype(np.int64)
        near = _NEAR[np.minimum(lower, 127), pick]
        near = np.where(orig != lower, near - 32, near)  # keep upper case upper
        random_letter = rng.integers(97, 123, wrong.size).astype(np.uint32)
        out[wrong, pos[wrong]] = np.where(ascii_letter, near, random_letter)
    return np.ascontiguousarray(out).view(f"U{width}").ravel().astype(str)


def email_noise(rng: np.random.Generator, email: np.ndarray, share: float) -> np.ndarray:
    """How addresses arrive from forms and exports: Capitalised, UPPER, stray spaces."""
    email = np.asarray(email).astype(str)
    u = rng.random(email.size)
    kind = rng.integers(0, 5, email.size)
    sel = np.flatnonzero((u < share) & (email != ""))
    if sel.size == 0:
        return email
    # Only the chosen few are transformed: capitalize() is a per-element loop inside numpy.
    e, k = email[sel], kind[sel]
    noisy = np.select(
        [k == 0, k == 1, k == 2, k == 3],
        [np.strings.capitalize(e), np.strings.upper(e), cat(" ", e), cat(e, " ")],
        cat("  ", np.strings.capitalize(e), " "),
    )
    out = email.astype(f"U{max(email.dtype.itemsize // 4, noisy.dtype.itemsize // 4)}")
    out[sel] = noisy
    return out


def domain_typos(email: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """gmail.com -> gmial.com and friends, where ``mask`` is set and the domain has a typo."""
    local, _, domain = np.strings.partition(email, "@")
    typo = domain.astype(object)
    for right, wrong in DOMAIN_TYPOS.items():
        typo[domain == right] = wrong
    typo = typo.astype(str)
    return np.where(mask & (typo != domain), cat(local, "@", typo), email)


def birth_date_noise(rng: np.random.Generator, dob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Birth dates as CRMs hold them when typed by hand: ``YYYYMMDD`` text with one of
    swapped day digits (19850412 -> 19850421, or an impossible 19850431), a day or month that
    cannot exist (19850230, 19851301), the 19000101 placeholder, or a year a century out."""
    out = dob.copy()
    rows = np.flatnonzero(mask & (np.strings.str_len(dob) == 8))
    if rows.size == 0:
        return out
    kind = rng.integers(0, 4, rows.size)
    text = dob[rows]
    year, month, day = (np.strings.slice(text, 0, 4), np.strings.slice(text, 4, 6), np.strings.slice(text, 6, 8))
    swapped = cat(year, month, np.strings.slice(day, 1, 2), np.strings.slice(day, 0, 1))
    impossible = np.where(rng.random(rows.size) < 0.5, cat(year, "0230"), cat(year, "1301"))
    future = cat((year.astype(np.int64) + 100).astype(str), month, day)  # 1985 typed as 2085
    out[rows] = np.select([kind == 0, kind == 1, kind == 2], [swapped, impossible, "19000101"], future)
    return out


def pick_rows(rng: np.random.Generator, n: int, rate: float, minimum: int = 0) -> np.ndarray:
    """Sorted distinct row indices: Binomial(n, rate) of them, but at least ``minimum``."""
    k = min(n, max(minimum, int(rng.binomial(n, rate)) if n else 0))
    return np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Malformed lines: rendered by hand, because no CSV/JSON writer produces them on purpose.
# ---------------------------------------------------------------------------------------------

BROKEN_COMMA, BROKEN_QUOTE, BROKEN_ENCODING = 1, 2, 3


def broken_csv_line(fields: list[str], kind: int, street_col: int, first_col: int) -> bytes:
    """One CSV record gone wrong the way hand-rolled exports break.

    * ``BROKEN_COMMA``: the street holds a comma but is not quoted -> one column too many;
    * ``BROKEN_QUOTE``: a nickname in quotes inside a quoted field, quotes not doubled;
    * ``BROKEN_ENCODING``: the line is written as Latin-1, so ``é`` is the single byte 0xE9
      (a row without any accented letter gets an accented first name first).
    """
    fields = list(fields)
    if kind == BROKEN_COMMA:
        street = fields[street_col] or "1 High Street"
        fields[street_col] = street if "," in street else f"{street}, Flat 2"
        return ",".join(f.replace('"', "") for f in fields).encode("utf-8")
    quoted = [f'"{f}"' if ("," in f or '"' in f) else f for f in (x.replace('"', '""') for x in fields)]
    if kind == BROKEN_QUOTE:
        first = fields[first_col] or "Robert"
        quoted[first_col] = f'"{first} "{first[:3]}" Jr"'
        return ",".join(quoted).encode("utf-8")
    if not any(128 <= ord(ch) < 256 for ch in "".join(fields)):  # nothing Latin-1 would garble
        fields[first_col] = "Renée" if fields[first_col][-1:] in "aeiou" else "José"
        quoted[first_col] = fields[first_col]
    return ",".join(quoted).encode("latin-1", errors="replace")


def truncated_json(line: str) -> str:
    """A JSON line cut off mid-way, as when an export job dies while writing."""
    return line[: max(24, len(line) * 3 // 5)]
