"""Keyed hashes (HMAC-SHA-256) of personal values: the only form the suppression list keeps.

A plain SHA-256 of an e-mail address is reversible by anyone holding a list of addresses; a keyed
hash is not without the key. The key comes from the ``CDM_PRIVACY_KEY`` environment variable and
is never stored in the warehouse, so a copy of the warehouse alone cannot confirm that a given
person was ever a customer.

The same HMAC is computed in Python (one value, ``keyed_hash``) and inside DuckDB
(``keyed_hash_sql``: millions of values in one query, no Python loop), from the standard
definition HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cdm_pipeline.lib.secrets_env import PRIVACY_KEY_ENV_VAR as KEY_ENV_VAR

_BLOCK = 64  # SHA-256 block size in bytes
MIN_KEY_BYTES = 16


class MissingPrivacyKey(RuntimeError):
    """The privacy key is not set (or too short to be a key)."""


class PrivacyKeyMismatch(MissingPrivacyKey):
    """The key is not the one the warehouse's suppression list was written with.

    As good as a missing key (its hashes match nothing on the list), so every handler of a missing
    key refuses it the same way; the message names the variable and both fingerprints, never a key.
    """


# The label whose keyed hash identifies a key. Kept as the analyst export first wrote it, so the
# fingerprints in earlier exports' manifests stay comparable with the warehouse's.
_FINGERPRINT_LABEL = "cdm analyst export key fingerprint"


def privacy_key() -> bytes:
    """The HMAC key from ``$CDM_PRIVACY_KEY``.

    Raises:
        MissingPrivacyKey: unset, or shorter than 16 bytes.
    """
    value = os.environ.get(KEY_ENV_VAR, "")
    if not value:
        raise MissingPrivacyKey(
            f"{KEY_ENV_VAR} is not set: privacy operations need the key for the suppression list's"
            " keyed hashes (e.g. export CDM_PRIVACY_KEY=$(openssl rand -hex 32); keep it out of the warehouse)"
        )
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise MissingPrivacyKey(f"{KEY_ENV_VAR} is too short: use at least {MIN_KEY_BYTES} characters")
    return key


def keyed_hash(value: str, key: bytes) -> str:
    """Lower-case hex HMAC-SHA-256 of ``value`` (UTF-8)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """A short keyed hash of a constant label: the same key gives the same fingerprint.

    Stored beside what a key produced (the suppression list, its ledger, a backup, an analyst
    export) so a different key is recognised; it tells nothing about the key.
    """
    return keyed_hash(_FINGERPRINT_LABEL, key)[:16]


def keyed_hash_params(key: bytes, prefix: str = "hmac") -> dict[str, bytes]:
    """The two padded keys ``keyed_hash_sql`` binds as ``$<prefix>_inner`` / ``$<prefix>_outer``."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\x00")
    return {
        f"{prefix}_inner": bytes(b ^ 0x36 for b in key),
        f"{prefix}_outer": bytes(b ^ 0x5C for b in key),
    }


def keyed_hash_sql(expression: str, prefix: str = "hmac") -> str:
    """DuckDB SQL for the hex HMAC-SHA-256 of a VARCHAR ``expression`` (NULL stays NULL).

    Bind ``keyed_hash_params(key, prefix)`` with the query.
    """
    inner = f"unhex(sha256(${prefix}_inner || encode({expression})))"
    return f"sha256(${prefix}_outer || {inner})"
