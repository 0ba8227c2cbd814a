"""Files holding personal data are owner-only (0600 files, 0700 folders) whatever the umask.

The shared demo (`demo_project`) is a real `cdm demo` subprocess; the commands below run as
subprocesses started with umask 022 on a copy whose files were loosened to 0644 / 0755 first (as
an earlier version left them), so both halves are proved: new files are born private, and the files
a command writes are tightened even when they existed.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from cdm_pipeline.lib import file_modes
from cdm_pipeline.lib.file_modes import (
    create_private_dirs,
    private_dir,
    private_file,
    private_umask,
    private_write_text,
    tighten,
)
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, REPO_ROOT, cli_env

KEY = "least-privilege-test-key-4c1d9e"
# Third-party CSS/JS/fonts of the Data Docs, copied with the package's own mode: no personal data,
# and unreachable for others because every folder above them is 0700 (asserted).
VENDOR = ("data_docs", "static", "vendor")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _with_umask(mask: int):
    def start() -> None:
        os.umask(mask)

    return start


def _cdm(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CDM, *args], capture_output=True, text=True, env=cli_env(CDM_PRIVACY_KEY=KEY),
        timeout=HANG_TIMEOUT, preexec_fn=_with_umask(umask),
    )


def _loosen(root: Path) -> None:
    """What an earlier version (or a umask 022 shell) left: 0644 files, 0755 folders."""
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)


def _not_private(root: Path) -> list[str]:
    wrong = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        expected = file_modes.PRIVATE_DIR_MODE if path.is_dir() else file_modes.PRIVATE_FILE_MODE
        if path.is_file() and all(part in path.relative_to(root).parts for part in VENDOR):
            continue
        if _mode(path) != expected:
            wrong.append(f"{oct(_mode(path))} {path.relative_to(root)}")
    return wrong


# --- the helpers --------------------------------------------------------------------------------


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_private_umask_hides_group_and_other_bits_and_keeps_a_stricter_one(loose_umask):
    assert private_umask() == 0o022
    assert os.umask(0o027) == 0o077
    private_umask()
    assert os.umask(0o022) == 0o077
    os.umask(0o277)
    private_umask()
    assert os.umask(0o022) == 0o277  # the owner's own write bit, cleared before, stays cleared


def test_private_dir_creates_owner_only_folders_and_tightens_an_existing_one(tmp_path, loose_umask):
    os.chmod(tmp_path, 0o755)
    created = private_dir(tmp_path / "a" / "b")
    assert created == tmp_path / "a" / "b"
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    os.chmod(created, 0o755)
    private_dir(created)
    assert _mode(created) == 0o700
    assert _mode(tmp_path) == 0o755  # a parent that existed (a home folder, /tmp) is not touched


def test_create_private_dirs_changes_no_folder_that_existed(tmp_path, loose_umask):
    os.chmod(tmp_path, 0o755)
    assert create_private_dirs(tmp_path / "x" / "y") == [tmp_path / "x", tmp_path / "x" / "y"]
    assert _mode(tmp_path) == 0o755
    assert _mode(tmp_path / "x") == 0o700 and _mode(tmp_path / "x" / "y") == 0o700
    os.chmod(tmp_path / "x", 0o755)
    assert create_private_dirs(tmp_path / "x") == []
    assert _mode(tmp_path / "x") == 0o755


def test_private_write_text_creates_0600_and_tightens_an_existing_0644_file(tmp_path):
    old = os.umask(0)
    try:
        private_write_text(tmp_path / "new.json", "{}")
        (tmp_path / "old.json").write_text("x")
        assert _mode(tmp_path / "old.json") == 0o666
        private_write_text(tmp_path / "old.json", "{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.json") == 0o600 and (tmp_path / "new.json").read_text() == "{}"
    assert _mode(tmp_path / "old.json") == 0o600 and (tmp_path / "old.json").read_text() == "{}"


def test_tighten_makes_a_database_and_its_wal_owner_only(tmp_path):
    database, wal = tmp_path / "cdm.duckdb", tmp_path / "cdm.duckdb.wal"
    for path in (database, wal):
        path.write_bytes(b"")
        os.chmod(path, 0o644)
    tighten(database)
    assert _mode(database) == 0o600 and _mode(wal) == 0o600
    tighten(tmp_path / "missing.duckdb")  # nothing there: nothing to do
    assert private_file(tmp_path / "missing") == tmp_path / "missing"


# --- the product ----------------------------------------------------------------------------------


def test_every_file_and_folder_the_demo_wrote_under_data_is_owner_only(demo_project):
    """`cdm demo` ran as a subprocess of this (umask 022 by default) session: landing files,
    warehouse, identity model, reports, exports and the run storage are all owner-only."""
    data = demo_project.root / "data"
    assert (data / "warehouse").is_dir() and (data / "identity").is_dir() and (data / "exports").is_dir()
    assert _not_private(data) == []
    home = demo_project.root / ".dagster_home"
    assert _mode(home) == 0o700
    assert [p for p in home.rglob("*") if _mode(p) & 0o077] == []


def test_commands_started_with_umask_022_write_and_tighten_owner_only_files(demo_project, tmp_path):
    project = demo_project.copy_to(tmp_path / "project")
    config = str(project / "cdm.yaml")
    _loosen(project / "data")
    os.chmod(project / ".dagster_home", 0o755)
    email = _one_exported_email(project)

    access = project / "data" / "privacy" / "access" / "REQ-LP-1.json"
    outputs = _cdm("privacy", "export", "--config", config, "--email", email, "--out", str(access))
    assert outputs.returncode == 0, outputs.stderr[-2000:]
    segment = _cdm("export", "segment", "Champions", "--config", config)
    assert segment.returncode == 0, segment.stderr[-2000:]
    analyst = _cdm("export", "analyst", "--config", config, "--out", str(project / "data" / "analyst_export"))
    assert analyst.returncode == 0, analyst.stderr[-2000:]

    assert _mode(access) == 0o600
    assert _mode(access.parent) == 0o700 and _mode(access.parent.parent) == 0o700  # both created here
    exports = project / "data" / "exports"
    champions = next(exports.glob("rfm_champions/*.csv"))
    assert _mode(exports) == 0o700 and _mode(champions.parent) == 0o700 and _mode(champions) == 0o600
    export_folder = project / "data" / "analyst_export"
    assert _mode(export_folder) == 0o700
    assert {oct(_mode(p)) for p in export_folder.iterdir()} == {"0o600"}
    # An export named on the command line into an existing shared folder leaves that folder's mode.
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    elsewhere = _cdm("export", "segment", "Champions", "--config", config, "--out", str(shared / "c.csv"))
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert _mode(shared) == 0o755 and _mode(shared / "c.csv") == 0o600


def test_the_run_storage_folder_is_tightened_when_a_command_uses_it(demo_project, tmp_path, monkeypatch):
    from cdm_pipeline.config import load_config
    from cdm_pipeline.runner import use_dagster_home

    project = demo_project.copy_to(tmp_path / "project")
    os.chmod(project / ".dagster_home", 0o755)
    assert use_dagster_home(load_config(project / "cdm.yaml")) == project / ".dagster_home"
    assert _mode(project / ".dagster_home") == 0o700
    elsewhere = tmp_path / "home"
    elsewhere.mkdir(mode=0o755)
    monkeypatch.setenv("DAGSTER_HOME", str(elsewhere))
    assert use_dagster_home(load_config(project / "cdm.yaml")) == elsewhere
    assert _mode(elsewhere) == 0o700


def test_loading_the_code_location_sets_the_private_umask_for_dagster_processes(demo_project):
    """`dagster dev` or `dg` without `cdm`: the code location itself makes later files private."""
    probe = (
        "import os; from cdm_pipeline.definitions import defs; defs();"
        " print(oct(os.umask(0o022)))"
    )
    done = subprocess.run(
        [str(Path(CDM).with_name("python")), "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT,
        env=cli_env(CDM_CONFIG=str(demo_project.root / "cdm.yaml")), timeout=HANG_TIMEOUT,
        preexec_fn=_with_umask(0o022),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0o77"


def _one_exported_email(project: Path) -> str:
    import duckdb

    conn = duckdb.connect(str(project / "data" / "warehouse" / "cdm.duckdb"), read_only=True)
    try:
        return conn.execute("SELECT min(email) FROM marts.customer_360 WHERE email IS NOT NULL").fetchone()[0]
    finally:
        conn.close()
