"""Files the pipeline writes outside the warehouse that hold personal data, encrypted under the
warehouse key (an access request's document: everything held on one person).

AES-256-GCM (the ``cryptography`` package) with a key derived from the warehouse key by HKDF-SHA256
(a fresh random salt per file, a fixed label per kind of file), so the warehouse key itself never
encrypts anything but the warehouse. A sealed file is ``<name>.enc``::

    b"CDMSEAL1" | key fingerprint (16 ASCII hex) | label length (1 byte) | label | salt (16) | nonce (12)
    | ciphertext and GCM tag

The header is authenticated with the contents (GCM's associated data): a changed byte anywhere is
refused. The fingerprint (``Encryption.fingerprint``) only lets a wrong key be named as such.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cdm_pipeline.lib.encryption import Encryption, EncryptionError
from cdm_pipeline.lib.file_modes import PRIVATE_FILE_MODE

MAGIC = b"CDMSEAL1"
SUFFIX = ".enc"
ACCESS_DOCUMENT = b"cdm access document"  # the HKDF label of access-request documents
_FINGERPRINT_BYTES, _SALT_BYTES, _NONCE_BYTES = 16, 16, 12


def sealed_path(path: Path) -> Path:
    """Where ``path``'s sealed version goes: ``<name>.enc`` beside it."""
    return path.with_name(path.name + SUFFIX)


def is_sealed(path: Path) -> bool:
    """Whether ``path`` starts like a sealed file (its header only; says nothing of the key)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def seal(data: bytes, encryption: Encryption, label: bytes = ACCESS_DOCUMENT) -> bytes:
    """``data`` encrypted under a key derived from ``encryption``'s key for ``label``, header first."""
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    header = MAGIC + encryption.fingerprint.encode("ascii") + bytes([len(label)]) + label + salt + nonce
    return header + AESGCM(_derive(encryption, salt, label)).encrypt(nonce, data, header)


def unseal(blob: bytes, encryption: Encryption, source: str = "the file") -> bytes:
    """The plain contents of a sealed blob; ``EncryptionError`` for another key, or a damaged or foreign file."""
    fingerprint, label, salt, nonce, end = _header(blob, source)
    if fingerprint != encryption.fingerprint:
        raise EncryptionError(
            f"{source} was sealed with another key (fingerprint {fingerprint}, the configured key's is"
            f" {encryption.fingerprint})"
        )
    try:
        return AESGCM(_derive(encryption, salt, label)).decrypt(nonce, blob[end:], blob[:end])
    except (InvalidTag, ValueError):
        raise EncryptionError(f"{source} is damaged: its contents do not match their authentication tag") from None


def _header(blob: bytes, source: str) -> tuple[str, bytes, bytes, bytes, int]:
    """A sealed blob's key fingerprint, label, salt and nonce, and where its ciphertext starts."""
    if not blob.startswith(MAGIC):
        raise EncryptionError(f"{source} is not a file sealed by cdm (no {MAGIC.decode()} header)")
    at = len(MAGIC)
    fingerprint = blob[at:at + _FINGERPRINT_BYTES].decode("ascii", errors="replace")
    at += _FINGERPRINT_BYTES
    label_length = blob[at] if len(blob) > at else 0
    label = blob[at + 1:at + 1 + label_length]
    at += 1 + label_length
    salt, nonce = blob[at:at + _SALT_BYTES], blob[at + _SALT_BYTES:at + _SALT_BYTES + _NONCE_BYTES]
    return fingerprint, label, salt, nonce, at + _SALT_BYTES + _NONCE_BYTES


def write_sealed(path: Path, data: bytes, encryption: Encryption, label: bytes = ACCESS_DOCUMENT) -> None:
    """Seal ``data`` into ``path`` atomically (a temporary file renamed), created owner-only (0600)."""
    _write_private(path, seal(data, encryption, label))


def read_sealed(path: Path, encryption: Encryption) -> bytes:
    """The plain contents of the sealed file ``path``."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise EncryptionError(f"cannot read {path}: {exc.strerror}") from None
    return unseal(blob, encryption, str(path))


def reseal(path: Path, old: Encryption, new: Encryption) -> None:
    """Re-encrypt the sealed file ``path`` from ``old``'s key to ``new``'s (a key rotation), atomically."""
    blob = path.read_bytes()
    label = _header(blob, str(path))[1]
    _write_private(path, seal(unseal(blob, old, str(path)), new, label))


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, created owner-only (0600): for a decrypted document."""
    _write_private(path, data)


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _derive(encryption: Encryption, salt: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=label).derive(encryption.key.encode("utf-8"))
