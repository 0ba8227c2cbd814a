"""Opaque, globally unique identifiers and vectorised text formatting helpers.

Identifiers must be unique across chunks without any shared state (chunks are generated
independently), must not leak the order people were simulated in (a matcher could otherwise
"cheat" by noticing that duplicate records have neighbouring ids), and must differ between
seeds. So every id is built from a unique integer ``(chunk, local index)`` pushed through a
keyed bijection on a fixed number of bits, then spelled in a fixed alphabet: unique by
construction, random-looking, deterministic.
"""

from __future__ import annotations

import numpy as np

_HEX = b"0123456789abcdef"
_BASE36 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = b"0123456789"


def id_keys(seed: int, count: int = 8) -> np.ndarray:
    """Seed-dependent 64-bit keys for :func:`scramble` (different seeds give different ids)."""
    state = np.random.SeedSequence(seed, spawn_key=(0xC0FFEE,)).generate_state(count, np.uint64)
    return state | np.uint64(1)  # odd, so they can double as multipliers


def scramble(values: np.ndarray, bits: int, key: int) -> np.ndarray:
    """A keyed bijection on ``[0, 2**bits)``; distinct inputs always give distinct outputs.

    Each round is invertible modulo ``2**bits``: xor with a constant, multiplication by an odd
    constant, and an xor-shift. uint64 arithmetic wraps, which is exactly the modulus we want.
    """
    mask = np.uint64((1 << bits) - 1)
    shift = np.uint64(bits // 2 + 1)
    x = np.asarray(values, dtype=np.uint64) & mask
    key = int(key)
    with np.errstate(over="ignore"):
        for r in range(3):
            k = np.uint64((key >> (r * 7)) & ((1 << bits) - 1))
            mult = np.uint64(((key * (2 * r + 3)) | 1) & ((1 << 64) - 1))
            x = (x ^ k) & mask
            x = (x * mult) & mask
            x = x ^ (x >> shift)
    return x


def encode(values: np.ndarray, alphabet: bytes, width: int) -> np.ndarray:
    """Spell unsigned integers with a fixed-width alphabet (most significant digit first)."""
    x = np.asarray(values, dtype=np.uint64).copy()
    base = np.uint64(len(alphabet))
    table = np.frombuffer(alphabet, dtype=np.uint8)
    out = np.empty((x.size, width), dtype=np.uint8)
    for pos in range(width - 1, -1, -1):
        out[:, pos] = table[(x % base).astype(np.intp)]
        x //= base
    return out.view(f"S{width}").ravel().astype(f"U{width}")


def unique_ints(chunk: int, count: int, offset: int = 0, local_bits: int = 32) -> np.ndarray:
    """``chunk << local_bits | (offset + i)``: unique across chunks, before scrambling."""
    if offset + count >= 1 << local_bits:
        raise ValueError("too many records in one chunk for this id space; use smaller chunks")
    local = np.arange(offset, offset + count, dtype=np.uint64)
    return (np.uint64(chunk) << np.uint64(local_bits)) | local


def make_ids(
    prefix: str,
    chunk: int,
    count: int,
    key: int,
    *,
    offset: int = 0,
    bits: int = 64,
    local_bits: int = 32,
    alphabet: bytes = _HEX,
    width: int = 16,
) -> np.ndarray:
    """``count`` ids ``prefix + spelled(scramble(unique int))``, unique for (chunk, offset + i)."""
    if chunk >= 1 << (bits - local_bits):
        raise ValueError("too many chunks for this id space")
    raw = scramble(unique_ints(chunk, count, offset, local_bits), bits, key)
    return np.strings.add(prefix, encode(raw, alphabet, width))


def contact_ids(chunk: int, count: int, key: int) -> np.ndarray:
    """Salesforce-looking contact ids such as ``0030K7F2QZ1AB`` (48-bit id space)."""
    return make_ids("003", chunk, count, key, bits=48, local_bits=24, alphabet=_BASE36, width=10)


def subscriber_ids(chunk: int, count: int, key: int) -> np.ndarray:
    """Mailchimp-like ``sub_0001a2b3`` (32-bit space: up to 4,096 chunks of 1M subscribers)."""
    return make_ids("sub_", chunk, count, key, bits=32, local_bits=20, width=8)


def order_ids(chunk: int, count: int, key: int, offset: int = 0) -> np.ndarray:
    """Order numbers such as ``SO-4K7F2QZ1`` (40-bit space)."""
    return make_ids(
        "SO-", chunk, count, key, offset=offset, bits=40, local_bits=22, alphabet=_BASE36, width=8
    )


def hex_ids(prefix: str, chunk: int, count: int, key: int, offset: int = 0) -> np.ndarray:
    """64-bit hex ids for high-volume events (email events, web events, sessions)."""
    return make_ids(prefix, chunk, count, key, offset=offset)


def ga_client_ids(chunk: int, count: int, key: int, first_seen: np.ndarray) -> np.ndarray:
    """GA-style client ids ``"<random 32-bit>.<first-seen unix seconds>"``.

    The random half is itself a 32-bit bijection of (chunk, i), so it alone is unique.
    """
    raw = scramble(unique_ints(chunk, count, 0, 18), 32, key)
    head = encode(raw, _DIGITS, 10)
    # GA's random half has no leading zeros; strip them the way str(int) would.
    head = np.strings.lstrip(head, "0")
    head = np.where(head == "", "0", head)
    return np.strings.add(np.strings.add(head, "."), first_seen.astype(np.int64).astype("U"))


# ---------------------------------------------------------------------------------------------
# Text formatting (vectorised)
# ---------------------------------------------------------------------------------------------


def cat(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of arrays and scalars."""
    out = np.strings.add(parts[0], parts[1])
    for part in parts[2:]:
        out = np.strings.add(out, part)
    return out


def zfill(text: np.ndarray, width: int | np.ndarray) -> np.ndarray:
    """``np.strings.zfill`` that also accepts empty arrays (numpy's raises on them)."""
    text = np.asarray(text)
    return np.strings.zfill(text, width) if text.size else text.astype("U1")


def zpad(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded decimal text."""
    return zfill(np.asarray(values, dtype=np.int64).astype("U"), width)


def iso_seconds(ts: np.ndarray) -> np.ndarray:
    """Unix seconds -> ``2026-10-03T14:22:05Z``."""
    text = np.datetime_as_string(np.asarray(ts, dtype=np.int64).astype("datetime64[s]"), unit="s")
    return np.strings.add(text, "Z")


def yyyymmdd(days: np.ndarray) -> np.ndarray:
    """Days since the epoch -> ``19850412``."""
    text = np.datetime_as_string(np.asarray(days, dtype=np.int64).astype("datetime64[D]"), unit="D")
    return np.strings.replace(text, "-", "")


def money(cents: np.ndarray) -> np.ndarray:
    """Integer cents -> ``123.45`` / ``-23.50`` (text, exactly two decimals)."""
    cents = np.asarray(cents, dtype=np.int64)
    units = (np.abs(cents) // 100).astype("U")
    text = cat(units, ".", zpad(np.abs(cents) % 100, 2))
    return np.where(cents < 0, np.strings.add("-", text), text)
