import os
import signal
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CDM = str(Path(sys.executable).with_name("cdm"))
# A subprocess timeout guards against a hang, not against slowness: a busy 2-core CI machine
# took a 30-partition `cdm run` past 300 s. Speed is measured in benchmarks/, not here.
HANG_TIMEOUT = 1800


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    # Tests never touch the developer's run storage or config.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CDM_CONFIG", raising=False)
    # `cdm`'s main() restores SIGPIPE's default action (for `cdm ... | head`). Called in-process
    # by a test, that would outlive it: a later write to a closed socket or pipe (an HTTP test
    # server answering a client that gave up) would silently kill the whole test worker.
    sigpipe = signal.getsignal(signal.SIGPIPE)
    yield
    signal.signal(signal.SIGPIPE, sigpipe)


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
