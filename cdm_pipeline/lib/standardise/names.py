"""Person names: Unicode-normalised, without titles and suffixes, with case fixed when lost.

Names feed fuzzy matching and greetings, so ``DR. JOHN SMITH JR.``, ``john smith`` and
``Ｊｏｈｎ Smith`` should all become ``John Smith``. Case is only repaired where it was clearly
lost (the whole value upper or lower case): mixed-case input is kept as written, because people
know their own names (``McDonald``, ``van der Berg``, ``DeShawn``, ``LeBlanc``) and any rule
would break some of them. Accents are always kept: ``José`` is not ``Jose``.

Case rules for values in all upper or all lower case:

* each word is capitalised, also after a hyphen (``García-López``) and after a one-letter
  prefix with apostrophe (``O'Brien``, ``D'Angelo``);
* ``Mc`` and ``Mac`` prefixes capitalise the next letter (``McDonald``, ``MacDonald``), except
  for names where that is wrong (``Mack``, ``Macias``, ``Machado``, ...);
* particles (``van``, ``der``, ``de``, ``la``, ``von``, ``da``, ``di``, ``le``, ``du`` ...) are
  lower case inside a value but capitalised as its first word: ``JAN VAN DER BERG`` gives
  ``Jan van der Berg`` and a surname-only ``VAN DER BERG`` gives ``Van der Berg`` (the Dutch
  and Belgian convention when the surname stands alone, and what sorts and displays well).
"""

from __future__ import annotations

import re
import unicodedata

from . import BLANK, Standardised

ISSUE = "invalid_name"

# Titles are removed only as the first word(s), and only when a name follows them. Keys are
# lower case without dots: "Dr." and "dr" are the same title.
TITLES = frozenset(
    "mr mrs ms miss mx dr prof sir dame rev revd herr frau mme mlle sr sra srta dra".split()
)
SUFFIXES = frozenset("jr jnr sr snr ii iii iv phd md esq".split())
PARTICLES = frozenset("van der den de del della la le du des da di dos das von zu ter ten".split())
# "Mr & Mrs John Smith": a joiner between two titles goes with them.
_JOINERS = frozenset(["&", "and", "+", "und", "et", "y", "/"])
# Mac names that are not Mac + capitalised name (after Lingua::EN::NameCase's exceptions).
MAC_EXCEPTIONS = frozenset(
    """macevicius machado machar machin machlin macias maciulis mackie mackle macklin mackmin
    macquarie macomber macin mackintosh macken machen machiel maciol mackell macklem mackrell
    maclin mackey mackley machell machon macedo macek""".split()
)

# Typographic apostrophes to "'" (before NFKC, which would turn U+00B4 into space + accent),
# and invisible characters out.
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'", "′": "'",
                              "\u200b": None, "\u2060": None, "\ufeff": None, "\u00ad": None})
_COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
# A run of letters (and combining marks): the unit that is capitalised.
_LETTERS = re.compile(rf"(?:[^\W\d_]|[{_COMBINING}])+")
_DIGIT_OR_AT = re.compile(r"[\d@]")
# Brackets are kept at the edges ("John (Jack)"), all other non-letters are stripped.
_OPENERS, _CLOSERS = "([", ")]"


def _is_letter(ch: str) -> bool:
    return ch.isalpha() or unicodedata.category(ch)[0] == "M"


def _strip_edges(text: str) -> str:
    """``text`` without surrounding punctuation, symbols and spaces: ``"Smith,"`` -> ``Smith``."""
    start, end = 0, len(text)
    while start < end and not (_is_letter(text[start]) or text[start] in _OPENERS):
        start += 1
    while end > start and not (_is_letter(text[end - 1]) or text[end - 1] in _CLOSERS):
        end -= 1
    return text[start:end]


def _key(word: str) -> str:
    return word.casefold().strip(".,").replace(".", "")


def _is_title(word: str, following: int) -> bool:
    if word.casefold() == "m.":
        # French "M. Jean Dupont"; "M. Dupont" is more likely an initial and keeps its M.
        return following >= 2
    return following >= 1 and _key(word) in TITLES


def _drop_titles_and_suffixes(words: list[str]) -> list[str]:
    # "Dr.John": a title glued on with its dot.
    head, dot, rest = words[0].partition(".")
    if dot and rest and _key(head) in TITLES:
        words = [head + dot, rest, *words[1:]]
    start, end = 0, len(words)
    while start < end:
        if _is_title(words[start], end - start - 1):
            start += 1
        elif (
            start > 0
            and words[start].casefold() in _JOINERS
            and start + 1 < end
            and _is_title(words[start + 1], end - start - 2)
        ):
            start += 1
        else:
            break
    while end - start > 1 and _key(words[end - 1]) in SUFFIXES:
        end -= 1
    return words[start:end]


def _capitalise_word(word: str) -> str:
    """Capitalise the letter runs of one lower-case word (hyphens, apostrophes, Mc/Mac)."""

    def run(match: re.Match[str]) -> str:
        letters, at = match.group(), match.start()
        if at >= 2 and word[at - 1] == "'":
            # After O', D', L' (a one-letter prefix) the name goes on in capitals: O'Brien.
            # After a longer run it does not: "Ma'ari", "Jones's".
            one_letter_prefix = at == 2 or not _is_letter(word[at - 3])
            if not one_letter_prefix:
                return letters
        if letters.startswith("mc") and len(letters) > 2:
            return "Mc" + letters[2:].capitalize()
        if (
            letters.startswith("mac")
            and len(letters) > 5
            and letters[-1] not in "aciozj"
            and letters not in MAC_EXCEPTIONS
        ):
            return "Mac" + letters[3:].capitalize()
        return letters.capitalize()

    return _LETTERS.sub(run, word)


def _fix_case(text: str) -> str:
    words = text.lower().split(" ")
    last = len(words) - 1
    fixed = " ".join(
        word if 0 < i < last and word in PARTICLES else _capitalise_word(word)
        for i, word in enumerate(words)
    )
    # "İ" (Turkish capital dotted I) lower-cases to "i" + combining dot outside a Turkish
    # locale: ŞAHİN should become Şahin, not Şahi̇n (an initial İ composes again: İlknur).
    return fixed.replace("i\u0307", "i") if "\u0307" in fixed else fixed


def standardise_name(raw: str | None) -> Standardised:
    """Standardise a person's name (a first name, a last name or a full name).

    Args:
        raw: The name as exported, e.g. ``"DR. JOHN SMITH JR."`` or ``"  o’brien "``.

    Returns:
        The cleaned name (``("John Smith", None)``, ``("O'Brien", None)``);
        ``(raw, "invalid_name")`` when it holds digits or an @ or no letter at all;
        ``(None, None)`` for None or blank input.
    """
    if raw is None:
        return BLANK
    text = raw.translate(_APOSTROPHES)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)  # full-width letters, ligatures, NBSP
    words = text.split()
    if not words:
        return BLANK
    text = " ".join(words)
    if _DIGIT_OR_AT.search(text) or not (text := _strip_edges(text)):
        return Standardised(raw, ISSUE)
    text = _strip_edges(" ".join(_drop_titles_and_suffixes(text.split(" "))))
    if not any(ch.isalpha() for ch in text):
        return Standardised(raw, ISSUE)
    if text.isupper() or text.islower():  # the case was lost: repair it, else keep it
        text = _fix_case(text)
        if not text.isascii():  # case mapping can leave decomposed letters ("ß́" -> "Sś")
            text = unicodedata.normalize("NFKC", text)
    return Standardised(text, None)
