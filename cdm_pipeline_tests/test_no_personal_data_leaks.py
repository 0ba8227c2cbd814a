"""No e-mail address or phone number of the demo's people leaks out of the warehouse.

The real `cdm demo` runs in a subprocess (then `cdm export analyst` on its marts); every address and
number in the demo's landing files is collected, and everything the pipeline writes *outside* the
warehouse is scanned for them:

* the Dagster run storage beside the config (`.dagster_home`: SQLite run and event storage, read
  as bytes and table by table with compressed blobs inflated; run logs; compute logs);
* the command line's stdout and stderr;
* `data/reports` (Data Docs, GX validation results) and `data/exports` (audience files and the
  analyst export; Parquet is read back value by value, since its pages are compressed).

Scanning is token-based, not value-by-value: e-mail-like tokens and digit runs (9 to 15 digits,
separators allowed) are pulled out of each blob with two regexes and intersected with the demo's
sets. Phones match on their last 9 digits, so `+44 7700 900123` and `07700 900123` are the same
number. The demo's placeholder values (`test@test.com`, `0000000000`, ...) are left out: they sit
on many people and are nobody's address. `test_the_scanner_finds_what_it_looks_for` proves the
scanner is not blind, in every form it reads.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.lib.demo.names import JUNK_EMAILS, JUNK_PHONES
from cdm_pipeline.lib.identity.deterministic import JUNK_PHONE_SUFFIXES
from cdm_pipeline.lib.personal_data.masking import mask_email, mask_phone
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

pytestmark = pytest.mark.slow

PRIVACY_KEY = "no-leak-test-privacy-key-0b5e11"
# Bounded quantifiers: an unbounded local part is quadratic on long runs of word characters
# (minified CSS took minutes).
EMAIL_TOKEN = re.compile(rb"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,253}")
# Digit runs with the separators people type; not inside a word, so the digits of a hex hash or a
# uuid (the audience files, the analyst export, run ids) are not taken for a number.
PHONE_TOKEN = re.compile(rb"(?<![A-Za-z0-9])\+?\(?\d+\)?(?:[ \-./]{1,2}\(?\d+\)?)*(?![A-Za-z0-9])")
PHONE_KEY_DIGITS = 9
SQLITE_MAGIC = b"SQLite format 3\x00"


# --- Tokens ---------------------------------------------------------------------------------


def email_addresses(data: bytes) -> Iterator[tuple[str, str]]:
    """(local part, domain) of every e-mail-like token, lower case."""
    for match in EMAIL_TOKEN.finditer(data):
        local, _, domain = match.group().decode("utf-8", "replace").lower().partition("@")
        domain = domain.strip(".-")
        if "." in domain:
            yield local, domain


def email_tokens(data: bytes) -> set[str]:
    """E-mail-like tokens, each with every suffix of its local part.

    Suffixes catch an address glued to what came before it (`u003cjane@x.com` from a JSON-escaped
    `<jane@x.com>`).
    """
    return {f"{local[i:]}@{domain}" for local, domain in email_addresses(data) for i in range(len(local))}


def landed_emails(data: bytes) -> set[str]:
    """The addresses in a landing file, each once, as written (lower case)."""
    return {f"{local}@{domain}" for local, domain in email_addresses(data)}


def digits_key(text: str) -> str | None:
    """The last 9 digits of a phone-like value with 9 to 15 digits (E.164 allows 15)."""
    digits = re.sub(r"\D", "", text)
    if not PHONE_KEY_DIGITS <= len(digits) <= 15:
        return None
    return digits[-PHONE_KEY_DIGITS:]


def phone_tokens(data: bytes) -> set[str]:
    found = set()
    for match in PHONE_TOKEN.finditer(data):
        key = digits_key(match.group().decode("ascii"))
        if key:
            found.add(key)
    return found


# --- The demo's personal values ---------------------------------------------------------------


@dataclass
class PersonalValues:
    emails: set[str]
    phones: dict[str, str]  # last 9 digits -> one value as landed (for the report, masked)


def collect_personal_values(landing: Path) -> PersonalValues:
    """Every e-mail address in the landing files and every phone number of the CRM contacts."""
    emails: set[str] = set()
    for path in sorted([*landing.rglob("*.csv"), *landing.rglob("*.jsonl")]):
        emails |= landed_emails(path.read_bytes())
    conn = duckdb.connect()
    for path in sorted(landing.rglob("*.parquet")):
        if path.name == "ground_truth.parquet":  # labels (ids and entities), not an export
            continue
        for text in _parquet_strings(conn, path):
            emails |= landed_emails(text)
    conn.close()
    emails -= {junk.lower() for junk in JUNK_EMAILS}

    junk_phones = {digits_key(junk) for junk in JUNK_PHONES}
    phones: dict[str, str] = {}
    for path in sorted(landing.glob("crm/contacts/*/*.csv")):
        rows = csv.reader(io.StringIO(path.read_bytes().decode("utf-8", "replace")))
        header = next(rows)
        column = header.index("Phone")
        for row in rows:
            if len(row) != len(header):  # a malformed line the demo plants: its cells are shifted
                continue
            key = digits_key(row[column])
            if key and key not in junk_phones and not _placeholder_number(key):
                phones.setdefault(key, row[column])
    return PersonalValues(emails, phones)


def _placeholder_number(key: str) -> bool:
    return len(set(key)) <= 1 or key in JUNK_PHONE_SUFFIXES


def _parquet_strings(conn: duckdb.DuckDBPyConnection, path: Path) -> Iterator[bytes]:
    """Every value of a Parquet file as text, one column at a time (nested values as their text)."""
    source = f"read_parquet('{path}')"
    columns = [row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    for column in columns:
        quoted = '"' + column.replace('"', '""') + '"'
        values = conn.execute(
            f"SELECT string_agg(DISTINCT CAST({quoted} AS VARCHAR), chr(10)) FROM {source}"
        ).fetchone()[0]
        if values:
            yield values.encode("utf-8")


# --- Scanning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    where: str
    kind: str  # "email" or "phone"
    count: int
    example: str  # masked

    def __str__(self) -> str:
        return f"{self.where}: {self.count} {self.kind}(s), e.g. {self.example}"


def scan_bytes(where: str, data: bytes, values: PersonalValues) -> list[Leak]:
    leaks = []
    emails = sorted(email_tokens(data) & values.emails)
    if emails:
        leaks.append(Leak(where, "email", len(emails), mask_email(emails[0])))
    phones = sorted(phone_tokens(data) & values.phones.keys())
    if phones:
        leaks.append(Leak(where, "phone", len(phones), mask_phone(values.phones[phones[0]])))
    return leaks


def scan_folder(folder: Path, root: Path, values: PersonalValues) -> list[Leak]:
    """Every file under ``folder``: its bytes, plus SQLite tables and Parquet values decoded."""
    leaks = []
    conn = duckdb.connect()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        data = path.read_bytes()
        leaks += scan_bytes(name, data, values)
        if data.startswith(SQLITE_MAGIC):
            for table, text in _sqlite_contents(path):
                leaks += scan_bytes(f"{name} (table {table})", text, values)
        elif path.suffix == ".parquet":
            leaks += scan_bytes(f"{name} (values)", b"\n".join(_parquet_strings(conn, path)), values)
    conn.close()
    return leaks


def _sqlite_contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each table's text and blobs, zlib-compressed blobs inflated (Dagster compresses snapshots).

    Reading through SQLite also joins text that overflows across pages, which a byte scan of the
    file would see cut in two.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            chunks: list[bytes] = []
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        chunks.append(value.encode("utf-8"))
                    elif isinstance(value, bytes):
                        chunks.append(value)
                        try:
                            chunks.append(zlib.decompress(value))
                        except zlib.error:
                            pass
            yield table, b"\n".join(chunks)
    finally:
        conn.close()


# --- The demo, once per session --------------------------------------------------------------


@dataclass
class DemoRun:
    root: Path
    values: PersonalValues
    outputs: dict[str, str]  # "cdm demo stdout" -> text, ...


@pytest.fixture(scope="module")
def demo(demo_project, tmp_path_factory) -> DemoRun:
    # The session's `cdm demo` (conftest.demo_project), copied: the analyst export writes into it.
    root = demo_project.copy_to(tmp_path_factory.mktemp("no_leaks") / "demo")
    config = root / "cdm.yaml"
    analyst = root / "data" / "exports" / "analyst"
    exported = subprocess.run(
        [CDM, "export", "analyst", "--config", str(config), "--out", str(analyst)],
        capture_output=True, text=True, env=cli_env(CDM_PRIVACY_KEY=PRIVACY_KEY), timeout=HANG_TIMEOUT,
    )
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-3000:]
    values = collect_personal_values(root / "data" / "landing")
    return DemoRun(root, values, {
        "cdm demo stdout": demo_project.stdout, "cdm demo stderr": demo_project.stderr,
        "cdm export analyst stdout": exported.stdout, "cdm export analyst stderr": exported.stderr,
    })


def test_the_demo_has_addresses_and_numbers_to_look_for(demo):
    assert len(demo.values.emails) > 500 and len(demo.values.phones) > 500
    assert all("@" in email for email in demo.values.emails)
    assert (demo.root / ".dagster_home").is_dir()
    assert any((demo.root / ".dagster_home").rglob("*.db"))
    assert any((demo.root / "data" / "reports").rglob("*.html"))
    assert len(list((demo.root / "data" / "exports").rglob("*.csv"))) == 3
    assert len(list((demo.root / "data" / "exports" / "analyst").glob("*.parquet"))) == 6


def test_the_scanner_finds_what_it_looks_for(demo, tmp_path):
    """Plant demo values in every form the scan reads: it must report each of them."""
    email = sorted(demo.values.emails)[0]
    key, landed = sorted(demo.values.phones.items())[0]
    other_email = sorted(demo.values.emails)[1]
    folder = tmp_path / "planted"
    folder.mkdir()
    # Text, differently cased and wrapped; the number re-spaced with its last 9 digits kept.
    spaced = f"+00 {key[:3]} {key[3:6]}-{key[6:]}"
    (folder / "run.log").write_text(f'failed on "<{email.upper()}>" and tel:{spaced}\n')
    # SQLite with the value only inside a zlib-compressed blob.
    db = sqlite3.connect(folder / "runs.db")
    db.execute("CREATE TABLE snapshots (body BLOB)")
    db.execute("INSERT INTO snapshots VALUES (?)", [zlib.compress(f'{{"email": "{other_email}"}}'.encode())])
    db.commit()
    db.close()
    # Parquet with compressed pages.
    parquet = folder / "export.parquet"
    conn = duckdb.connect()
    conn.execute(
        "COPY (SELECT $phone AS phone, range AS n FROM range(5000)) TO $path (FORMAT parquet, COMPRESSION zstd)",
        {"phone": landed, "path": str(parquet)},
    )
    conn.close()
    # Counts, dates, and a hash whose hex happens to hold a demo number's digits: none is a phone.
    (folder / "clean.txt").write_text(f"4,873 rows; run 5c8f5915; 2026-10-03T00:00:00Z; sha256 3f{key}c0a1\n")

    found = {(leak.where, leak.kind) for leak in scan_folder(folder, tmp_path, demo.values)}
    assert ("planted/run.log", "email") in found
    assert ("planted/run.log", "phone") in found
    assert ("planted/runs.db (table snapshots)", "email") in found
    assert ("planted/export.parquet (values)", "phone") in found
    assert not any(where.startswith("planted/clean.txt") for where, _ in found)


def test_run_storage_and_logs_hold_no_email_or_phone(demo):
    leaks = scan_folder(demo.root / ".dagster_home", demo.root, demo.values)
    assert leaks == [], "\n".join(map(str, leaks))


def test_command_line_output_holds_no_email_or_phone(demo):
    leaks = [leak for name, text in demo.outputs.items() for leak in scan_bytes(name, text.encode(), demo.values)]
    assert leaks == [], "\n".join(map(str, leaks))


def test_reports_and_exports_hold_no_email_or_phone(demo):
    leaks = []
    for folder in ("reports", "exports"):
        leaks += scan_folder(demo.root / "data" / folder, demo.root, demo.values)
    assert leaks == [], "\n".join(map(str, leaks))
