import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CDM = str(Path(sys.executable).with_name("cdm"))
# A subprocess timeout guards against a hang, not against slowness: a busy 2-core CI machine
# took a 30-partition `cdm run` past 300 s. Speed is measured in benchmarks/, not here.
HANG_TIMEOUT = 1800


# The files of real runs, longest first: their time is their number of `cdm run`s (each step of a
# run is a process of its own), measured with `pytest -n 2 -m slow --durations=0`. test_identity_cli
# builds the session's demo (demo_project) and re-runs it five times; the other worker meanwhile
# runs the 30-partition backfills and then test_cli_run. A slow file missing here runs after these.
LONGEST_FIRST = (
    "test_identity_cli.py",
    "test_cli_ui.py",
    "test_cli_run.py",
    "test_privacy_cli.py",
    "test_identity_spark.py",
    "test_retailer_exports.py",
    "test_quality_gates.py",
    "test_demo_pipeline.py",
    "test_alerts.py",
    "test_no_personal_data_leaks.py",
    "test_encryption.py",
    "test_run_robustness.py",
    "test_backups.py",
)


def pytest_configure(config):
    # pytest-xdist hands out whole files (--dist loadfile), by default the files with the most
    # tests first; the files of real runs hold few tests each, so they came last and one of them
    # kept a worker busy for minutes after the other had finished. The order below is kept instead.
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Files of real runs (marked slow) first, the longest first; then the other files, those
    with the most tests first (xdist's own order).

    Two workers then start on the long files and share the many short ones at the end, so they
    finish within seconds of each other. The order inside a file is kept.
    """
    slow = {item.path.name for item in items if item.get_closest_marker("slow")}
    tests = Counter(item.path.name for item in items)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item):
        name = item.path.name
        return (0, rank.get(name, len(rank)), name) if name in slow else (1, -tests[name], name)

    items.sort(key=order)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    # Tests never touch the developer's run storage or config.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CDM_CONFIG", raising=False)
    # `cdm`'s main() restores SIGPIPE's default action (for `cdm ... | head`). Called in-process
    # by a test, that would outlive it: a later write to a closed socket or pipe (an HTTP test
    # server answering a client that gave up) would silently kill the whole test worker.
    sigpipe = signal.getsignal(signal.SIGPIPE)
    # main() also sets the umask to 077 (owner-only files): a test's files must not depend on
    # whether an earlier test in the same worker called it.
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    signal.signal(signal.SIGPIPE, sigpipe)
    os.umask(umask)


@contextlib.contextmanager
def warehouse_lock_held(path: Path):
    """Another process (a DuckDB shell, a notebook) holds ``path``'s lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
         " sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("", timeout=HANG_TIMEOUT)  # releases the lock


def write_config(folder: Path, text: str, name: str = "cdm.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def land_file(landing: Path, source, day, filename: str, data: bytes) -> Path:
    """Write ``data`` as one of ``source``'s files for ``day``, in the folder its path names."""
    folder = landing / source.path.split("{date}")[0] / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_bytes(data)
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CDM_CONFIG")}
    env.update(extra)
    return env


# --- One `cdm demo` for the whole test session -----------------------------------------------

# The demo the CLI tests read: 1,500 people over three days. One `cdm demo` takes a few minutes of
# a 2-core machine, so it runs once per session, not once per test file.
DEMO_ARGS = ("--people", "1500", "--days", "3", "--seed", "11")


@dataclass(frozen=True)
class DemoProject:
    """A finished `cdm demo`: config, landing files, warehouse, run storage, reports and exports.

    Shared by every test of the session (and both xdist workers): read it, never change it. A test
    that runs the pipeline again, erases someone or writes an export works on ``copy_to(folder)``.
    """

    root: Path
    returncode: int
    stdout: str
    stderr: str

    def copy_to(self, folder: Path) -> Path:
        """A private copy of the whole project (its config names its folders relative to itself)."""
        shutil.copytree(self.root, folder)
        return folder


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory) -> DemoProject:
    # Under xdist every worker has its own base folder inside the session's; the first worker to
    # ask builds the demo there, under a lock, and the other one waits for it and reads it.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, outcome = shared / "demo_project", shared / "demo_project.json"
    with (shared / "demo_project.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not outcome.exists():
            root.mkdir(exist_ok=True)
            (root / "cdm.yaml").write_text((REPO_ROOT / "cdm.yaml").read_text())
            done = subprocess.run(
                [CDM, "demo", "--config", str(root / "cdm.yaml"), *DEMO_ARGS],
                capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
            )
            outcome.write_text(json.dumps(
                {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
            ))
    demo = DemoProject(root, **json.loads(outcome.read_text()))
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    return demo
