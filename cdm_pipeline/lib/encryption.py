"""The warehouse key: where it comes from, how it is checked, and how DuckDB is told to use it.

The key never lives in ``cdm.yaml``, the warehouse, a log or Dagster's run config. It comes from
``$CDM_WAREHOUSE_KEY``, else from a key file named by ``$CDM_WAREHOUSE_KEY_FILE`` or by
``security.key_file`` in the config (a path, not the key). A key file must be readable by its
owner only, as ssh insists for private keys: a key that anyone on the machine can read protects
nothing.

DuckDB 2.0 encrypts a database file (AES-GCM) when it is attached with ``ENCRYPTION_KEY``; its
WAL and, with ``temp_file_encryption``, its spill files are encrypted too. Writing needs a crypto
module: the ``httpfs`` extension's OpenSSL (the secure one), or DuckDB's built-in mbedtls, which
DuckDB itself calls "not securely encrypted" and enables only with ``force_mbedtls_unsafe``. So
``security.crypto: httpfs`` (the default) loads httpfs and refuses to write without it;
``builtin`` must be chosen explicitly, for machines that cannot install httpfs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb

from cdm_pipeline.lib.secrets_env import WAREHOUSE_KEY_ENV_VAR as KEY_ENV_VAR
from cdm_pipeline.lib.secrets_env import WAREHOUSE_KEY_FILE_ENV_VAR as KEY_FILE_ENV_VAR
from cdm_pipeline.lib.secrets_env import WAREHOUSE_NEW_KEY_ENV_VAR as NEW_KEY_ENV_VAR  # rotate-key's target
from cdm_pipeline.lib.secrets_env import WAREHOUSE_NEW_KEY_FILE_ENV_VAR as NEW_KEY_FILE_ENV_VAR

if TYPE_CHECKING:
    from cdm_pipeline.config import CdmConfig

MIN_KEY_CHARS = 16
Crypto = Literal["httpfs", "builtin"]


class EncryptionError(RuntimeError):
    """A key that cannot be used, or no way to encrypt (the message never carries the key)."""


@dataclass(frozen=True)
class Encryption:
    """How to open an encrypted warehouse. ``repr`` leaves the key out, so a log line cannot show it."""

    key: str = field(repr=False)
    crypto: Crypto = "httpfs"
    extension_directory: Path | None = None

    @property
    def fingerprint(self) -> str:
        """A short HMAC of a fixed label under the key: tells keys apart, reveals nothing of them."""
        return hmac.new(self.key.encode("utf-8"), b"cdm warehouse key", hashlib.sha256).hexdigest()[:16]

    def with_key(self, key: str) -> Encryption:
        return Encryption(key, self.crypto, self.extension_directory)


def warehouse_encryption(config: CdmConfig) -> Encryption | None:
    """The config's warehouse encryption, or None when no key is configured (a plain warehouse)."""
    security = config.security
    return encryption_from(security.key_file, security.crypto, security.extension_directory)


def encryption_from(
    key_file: Path | None, crypto: Crypto = "httpfs", extension_directory: Path | None = None
) -> Encryption | None:
    """``warehouse_encryption`` from the config's (non-secret) ``security`` settings and the environment."""
    key = _key_from(KEY_ENV_VAR, KEY_FILE_ENV_VAR, key_file)
    if key is None:
        return None
    return Encryption(key, crypto, extension_directory)


def new_key(config: CdmConfig) -> Encryption:
    """The key ``rotate-key`` / ``encrypt`` moves to, from ``$CDM_WAREHOUSE_NEW_KEY(_FILE)``."""
    key = _key_from(NEW_KEY_ENV_VAR, NEW_KEY_FILE_ENV_VAR, None)
    if key is None:
        raise EncryptionError(f"set {NEW_KEY_ENV_VAR} or {NEW_KEY_FILE_ENV_VAR} to the new key")
    return Encryption(key, config.security.crypto, config.security.extension_directory)


def read_key_file(path: Path) -> str:
    """A key file's key (surrounding whitespace removed), refused unless only its owner can read it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise EncryptionError(f"cannot read the key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EncryptionError(
            f"the key file {path} can be read by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise EncryptionError(f"cannot read the key file {path}: {exc.__class__.__name__}") from None


def _key_from(env_var: str, file_env_var: str, configured_file: Path | None) -> str | None:
    value = os.environ.get(env_var, "")
    where = f"${env_var}"
    if not value:
        file_name = os.environ.get(file_env_var) or configured_file
        if not file_name:
            return None
        value = read_key_file(Path(file_name))
        where = f"the key file {file_name}"
    value = value.strip()
    if len(value) < MIN_KEY_CHARS:
        raise EncryptionError(f"{where} is too short for a key: use at least {MIN_KEY_CHARS} characters"
                              " (e.g. openssl rand -hex 32)")
    if "\x00" in value:
        raise EncryptionError(f"{where} contains a NUL character")
    return value


def enable_crypto(conn: duckdb.DuckDBPyConnection, encryption: Encryption) -> None:
    """Give ``conn`` a crypto module that can write encrypted files, as ``encryption.crypto`` says."""
    if encryption.crypto == "builtin":
        conn.execute("SET force_mbedtls_unsafe = 'true'")
        return
    try:
        conn.execute("LOAD httpfs")
        return
    except duckdb.Error:
        pass
    try:
        conn.execute("INSTALL httpfs")
        conn.execute("LOAD httpfs")
    except duckdb.Error as exc:
        where = encryption.extension_directory or "DuckDB's extension repository"
        raise EncryptionError(
            "cannot write an encrypted warehouse: DuckDB's httpfs extension (its OpenSSL crypto) could not"
            f" be loaded from {where} ({str(exc).splitlines()[0][:160]}). Put httpfs in"
            " security.extension_directory, or set security.crypto: builtin to accept DuckDB's built-in"
            " mbedtls mode, which DuckDB does not consider securely encrypted"
        ) from None


def is_encrypted_file(path: Path) -> bool | None:
    """Whether a DuckDB file is encrypted (None: not a DuckDB file, or absent). Reads only the header."""
    try:
        with path.open("rb") as handle:
            header = handle.read(4096 + 64)
    except OSError:
        return None
    # DuckDB's main header: 8-byte checksum, then the magic "DUCK", version, flags. Bit 0 of the
    # first flag word is "encrypted" (storage/storage_info.hpp MainHeader::ENCRYPTED_DATABASE_FLAG).
    if header[8:12] != b"DUCK":
        return None
    flags = int.from_bytes(header[20:28], "little")
    return bool(flags & 1)
