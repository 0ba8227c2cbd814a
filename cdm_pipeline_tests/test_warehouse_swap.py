"""A rewrite of the warehouse file (an erasure's compaction) never loses a write another process
committed meanwhile.

The reliability probe's HIGH finding: the old compaction copied the file, let go of it, then
renamed the copy over it; a process that took the lock in between wrote into the old file, which
the rename then threw away (2-3 committed rows lost in 4 of 4 tries). Here real processes race: a
writer opens the warehouse the way pipeline steps do and commits one numbered row per open, while
another process compacts the file again and again. Every row the writer saw committed must be in
the final file, plain and encrypted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdm_pipeline.lib.encryption import KEY_ENV_VAR, encryption_from
from cdm_pipeline.lib.warehouse import open_warehouse

HANG_TIMEOUT = 300
# With the old compaction (ccef4a8), 15 rewrites of a 50,000-row file lost 1-4 of 21-47 committed
# rows in 8 of 8 tries (10 rewrites: 3 of 4 tries); with the rewrite under the lock, none.
COMPACTIONS = 15
FILLER_ROWS = 50_000
KEY = "swap-test-key-0123456789abcdef"

# Opens the warehouse as a pipeline step does (waiting for the lock), commits one numbered row,
# prints its number once the INSERT has returned (committed), closes; until told to stop.
WRITER = """
import sys, time
from pathlib import Path
from cdm_pipeline.lib.encryption import encryption_from
from cdm_pipeline.lib.warehouse import PIPELINE_LOCK_WAIT, open_warehouse

path, stop = Path(sys.argv[1]), Path(sys.argv[2])
encryption = encryption_from(None, "builtin")
n = 0
while not stop.exists():
    n += 1
    with open_warehouse(path, settings={}, lock_wait=PIPELINE_LOCK_WAIT, encryption=encryption) as conn:
        conn.execute("INSERT INTO swap_probe VALUES (?)", [n])
        print(n, flush=True)
    if n == 1:
        (stop.parent / "writing").touch()
    time.sleep(0.01)  # a moment between steps, or the compactor, backing off, might never get the file
"""

# Compacts the file COMPACTIONS times (retrying while the writer holds it), then tells the writer to stop.
COMPACTOR = """
import sys, time
from pathlib import Path
from cdm_pipeline.lib.encryption import encryption_from
from cdm_pipeline.lib.privacy.erasure import compact_warehouse
from cdm_pipeline.lib.warehouse import PIPELINE_LOCK_WAIT

path, stop, times = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
done = 0
while not (stop.parent / "writing").exists():  # the race needs the writer going
    time.sleep(0.01)
try:
    while done < times:
        compact_warehouse(path, {}, encryption_from(None, "builtin"), PIPELINE_LOCK_WAIT)
        done += 1
        time.sleep(0.05)
finally:
    stop.touch()
print(done)
"""


def _warehouse(path: Path, encrypted: bool) -> None:
    """A warehouse big enough that a copy takes a moment, with the table the writer fills."""
    with open_warehouse(path, settings={}, encryption=encryption_from(None, "builtin") if encrypted else None) as conn:
        conn.execute(f"CREATE TABLE filler AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range({FILLER_ROWS})")
        conn.execute("CREATE TABLE swap_probe (n INTEGER)")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_rows_committed_while_the_file_is_compacted_are_all_in_the_final_file(tmp_path, monkeypatch, encrypted):
    if encrypted:
        monkeypatch.setenv(KEY_ENV_VAR, KEY)
    else:
        monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    path, stop = tmp_path / "cdm.duckdb", tmp_path / "stop"
    _warehouse(path, encrypted)

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    compactor = subprocess.run(
        [sys.executable, "-c", COMPACTOR, str(path), str(stop), str(COMPACTIONS)], capture_output=True, text=True,
        env=env, timeout=HANG_TIMEOUT,
    )
    out, err = writer.communicate(timeout=HANG_TIMEOUT)
    assert compactor.returncode == 0, compactor.stderr[-6000:]
    assert compactor.stdout.split() == [str(COMPACTIONS)]
    assert writer.returncode == 0, err[-2000:]
    committed = {int(line) for line in out.split()}
    assert len(committed) >= 5  # the writer did write while the file was being rewritten

    with open_warehouse(path, settings={}, read_only=True, encryption=encryption_from(None, "builtin")) as conn:
        kept = {n for (n,) in conn.execute("SELECT n FROM swap_probe").fetchall()}
        assert conn.execute("SELECT count(*) FROM filler").fetchone()[0] == FILLER_ROWS
    lost = sorted(committed - kept)
    assert lost == [], f"{len(lost)} of {len(committed)} committed rows lost"
