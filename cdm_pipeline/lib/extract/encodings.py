"""Text encodings of landed CSV files: which DuckDB reads itself, transcoding the rest, and hints.

DuckDB's CSV reader knows UTF-8, Latin-1 and little-endian UTF-16 only (big-endian UTF-16 reads
as zero rows, without an error). Files in any other Python codec (windows-1252, iso-8859-15,
cp850, ...) are copied to UTF-8 in fixed-size chunks first, so memory stays bounded whatever the
file's size. A byte the codec cannot decode becomes ``0xFF`` in the copy, which is never valid
UTF-8: DuckDB then rejects that line as it would in a UTF-8 file, with the same record number,
instead of the copy silently holding a replacement character.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

# Python codec name (as codecs.lookup spells it) -> DuckDB's name for the same encoding.
# utf-8-sig is plain UTF-8 to DuckDB, which skips a byte-order mark itself.
_NATIVE = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "iso8859-1": "latin-1"}
_UTF8_NAMES = frozenset({"utf-8", "utf-8-sig"})
CHUNK_BYTES = 1 << 20
_HINT_SCAN_BYTES = 32 << 20  # a guess needs a sample, not the whole of a huge file
_INVALID = "cdm-invalid-byte"
_INVALID_BYTE = b"\xff"


def _mark_invalid(error: UnicodeError) -> tuple[str | bytes, int]:
    # Decoding: a lone surrogate stands for the bad bytes; encoding: it (and any other character
    # UTF-8 cannot hold) becomes 0xFF, so the line stays detectably broken.
    if isinstance(error, UnicodeDecodeError):
        return "\udcff", error.end
    if isinstance(error, UnicodeEncodeError):
        return _INVALID_BYTE, error.end
    raise error


codecs.register_error(_INVALID, _mark_invalid)


def codec_name(encoding: str) -> str:
    """The canonical Python name of ``encoding`` (``cp1252`` for ``Windows-1252``)."""
    return codecs.lookup(encoding).name


def duckdb_encoding(encoding: str) -> str | None:
    """DuckDB's name for ``encoding`` when its CSV reader reads it natively, else None."""
    return _NATIVE.get(codec_name(encoding))


def is_utf8(encoding: str) -> bool:
    return codec_name(encoding) in _UTF8_NAMES


def transcode_to_utf8(source: Path, target: Path, encoding: str, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Copy ``source`` (in ``encoding``) to ``target`` as UTF-8, ``chunk_bytes`` at a time.

    Line breaks are kept exactly, so record numbers in the copy are those of the original. A
    byte-order mark is dropped by the codecs that expect one (utf-8-sig, utf-16, utf-32).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors=_INVALID)
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(chunk_bytes):
            dst.write(decoder.decode(chunk).encode("utf-8", _INVALID))
        dst.write(decoder.decode(b"", final=True).encode("utf-8", _INVALID))


class ScratchFolder:
    """A folder for transcoded copies: made on first use, removed (with its files) on close.

    It is made beside DuckDB's temp directory (the warehouse's folder for a file database), so
    the copies land on the disk the warehouse already spills to rather than a RAM-backed /tmp.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self._parent = _scratch_parent(conn)
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            _remove_stale(self._parent)
            self._path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=self._parent))
        return self._path

    def close(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


SCRATCH_PREFIX = ".cdm_transcode_"
# A copy this old belongs to a load that was killed (a load takes minutes, not hours).
STALE_SECONDS = 6 * 3600


def _remove_stale(parent: Path | None) -> None:
    folder = Path(parent or tempfile.gettempdir())
    now = time.time()
    for old in folder.glob(SCRATCH_PREFIX + "*"):
        try:
            if now - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # gone already, or another process's


@contextlib.contextmanager
def scratch_folder(conn: duckdb.DuckDBPyConnection):
    scratch = ScratchFolder(conn)
    try:
        yield scratch
    finally:
        scratch.close()


def _scratch_parent(conn: duckdb.DuckDBPyConnection) -> Path | None:
    try:
        setting = conn.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    except duckdb.Error:
        return None
    if not setting or setting == ".tmp":  # an in-memory database's: use the system's temp
        return None
    parent = Path(setting).resolve().parent
    return parent if parent.is_dir() else None


def guess_encoding(path: Path, configured: str) -> str | None:
    """An encoding ``path`` is more likely in than ``configured``, or None without a good guess.

    Only called for files with lines that did not decode. A Windows-1252 file read as UTF-8
    writes accented letters as single bytes, which never form a valid multi-byte UTF-8
    sequence: a file with no valid one is probably windows-1252, while a UTF-8 file with a few
    corrupt lines has plenty (and gets no guess).
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        if head.startswith(codecs.BOM_UTF8):
            return None if is_utf8(configured) else "utf-8"
        if len(head) >= 2 and (head[0] == 0) != (head[1] == 0):
            return "utf-16-be" if head[0] == 0 else "utf-16-le"
        if is_utf8(configured):
            return None if _has_multibyte_utf8(path) else "windows-1252"
        return "utf-8" if _decodes(path, "utf-8") else None
    except OSError:
        return None


_NON_ASCII = re.compile("[^\x00-\x7f\ufffd]")


def _has_multibyte_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with path.open("rb") as handle:
        for _ in range(_HINT_SCAN_BYTES // CHUNK_BYTES):
            chunk = handle.read(CHUNK_BYTES)
            if _NON_ASCII.search(decoder.decode(chunk, final=not chunk)):
                return True
            if not chunk:
                break
    return False


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as handle:
            for _ in range(_HINT_SCAN_BYTES // CHUNK_BYTES):
                chunk = handle.read(CHUNK_BYTES)
                decoder.decode(chunk, final=not chunk)
                if not chunk:
                    break
    except UnicodeDecodeError:
        return False
    return True
