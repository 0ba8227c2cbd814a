"""``cdm ui``: the Dagster UI (webserver and daemon) for this project, on 127.0.0.1 only.

`cdm ui` stays a small supervisor of ``dagster dev`` instead of replacing itself with it, so
that stopping it leaves no process behind (issue 19, item 9). ``dagster dev`` runs in a session
of its own; SIGTERM, SIGINT or SIGHUP to `cdm ui` (its pid or its process group) becomes the
SIGINT to all of dagster's processes that Ctrl-C in a terminal sends, and whatever still runs
after a grace period is killed.

Why not let dagster handle the signals itself: dagster maps SIGTERM onto SIGINT's handler, so a
``dagster dev`` started with SIGINT ignored (a shell's background job, ``cdm ui &``) ignores
SIGTERM too, while its webserver (uvicorn) does stop listening; the code server, its gRPC
server, the webserver and the daemon then wait on each other forever. And a ``dagster dev``
that dies without telling its children leaves them all running: the webserver and the daemon
only stop on a message through their shutdown pipes, and keep the code server alive.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cdm_pipeline.config import CONFIG_ENV_VAR
from cdm_pipeline.project import PROJECT_ROOT

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Dagster's processes stopped 2 to 5 s after SIGINT when measured, but not within 6 s on a
# 2-core machine at load 10. A stop must be over within 10 s, and after the kill this process
# needs a second or two of its own to exit.
GRACE_SECONDS = 5.0
POLL_SECONDS = 0.1
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ui_command(config_path: Path | None, port: int) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.runner import use_dagster_home

    config = resolve_config(config_path)
    os.environ[CONFIG_ENV_VAR] = str(config.config_path)
    home = use_dagster_home(config)
    print(f"Dagster UI: http://127.0.0.1:{port}  (run storage: {home}; Ctrl-C stops it)", flush=True)
    return supervise([
        sys.executable, "-m", "dagster", "dev",
        "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "--host", "127.0.0.1", "--port", str(port),
    ])


def supervise(command: list[str]) -> int:
    """Run ``dagster dev`` until it exits or a stop signal arrives; leave none of its processes.

    Returns its exit status (128 + the signal's number if a signal ended it).
    """
    received: list[int] = []
    for sig in STOP_SIGNALS:
        # An ignored signal was ignored on purpose (nohup, a shell's background job): keep it so.
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, lambda signum, _frame: received.append(signum))
    # Its own session: a signal to our process group (Ctrl-C, `kill -- -PGID`) reaches only us,
    # and dagster dev's process group holds everything it starts, to be stopped together.
    process = subprocess.Popen(command, start_new_session=True, preexec_fn=_child_setup())
    try:
        _wait_until(lambda: process.poll() is not None or bool(received), timeout=None)
    finally:
        _stop_group(process.pid)
    status = process.wait()
    return status if status >= 0 else 128 - status


def _child_setup() -> Callable[[], None]:
    """What ``dagster dev`` needs between fork and exec (we have no threads yet, so it is safe)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def setup() -> None:
        # Inherited, an ignored SIGINT would make dagster ignore SIGTERM as well (see above).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            # If we are killed outright (SIGKILL), Linux sends dagster dev the SIGTERM we no
            # longer can, and it shuts its children down itself.
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def _stop_group(pgid: int) -> None:
    """Stop every process of ``dagster dev``'s group as Ctrl-C would, and kill what is left.

    Dagster starts every process of its own (webserver, daemon, code server, gRPC server, run
    workers) in that group, none in a new session or group. Each takes SIGINT as its request to
    stop cleanly, and all stop at once, as they do after Ctrl-C on ``dagster dev`` in a terminal.
    """
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGINT)
        _wait_until(lambda: not _group_alive(pgid), timeout=GRACE_SECONDS)
        _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running.

    Zombies do not count: an orphan's zombie stays in the group until init reaps it, which in
    some containers takes a second or more.
    """
    if not os.path.isdir("/proc"):  # not Linux: a zombie costs at most GRACE_SECONDS here
        return _signal_group(pgid, 0)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            state, _parent, group = stat[stat.rindex(")") + 2:].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_until(done: Callable[[], bool], timeout: float | None) -> None:
    # Polling, not Popen.wait: a stop signal only sets a flag, and the flag has to be seen.
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done() and (deadline is None or time.monotonic() < deadline):
        time.sleep(POLL_SECONDS)
