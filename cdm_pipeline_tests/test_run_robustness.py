"""`cdm run` when the machine, not the data, is the problem: a locked or corrupt warehouse, a full
disk, and an alert hook that must not see the pipeline's secrets.

A full disk is a real one: a 1 MB tmpfs mounted in a private mount namespace (`unshare -m`, or
`unshare -rm` for a user who is not root), so nothing outside the test's process tree sees it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.execution.plan.objects import StepFailureData
from dagster._utils.error import SerializableErrorInfo

from cdm_pipeline.cli.run import print_run_summary
from cdm_pipeline.config import AlertsConfig, load_config
from cdm_pipeline.defs.step_failures import fail_if_disk_full
from cdm_pipeline.lib import encryption
from cdm_pipeline.lib.automation.alerts import RunFailureAlert, failure_message, send_alert
from cdm_pipeline.lib.disk_space import describe_full_disk
from cdm_pipeline.lib.personal_data import keyed_hash
from cdm_pipeline.lib.secrets_env import SECRET_ENV_VARS, without_secrets
from cdm_pipeline.runner import RunOutcome
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env, warehouse_lock_held, write_config

DAY = dt.date(2026, 10, 1)
FULL_DISK = "No space left on device"
ROLLBACK = "TransactionContext Error: cannot rollback - no transaction is active"

ONE_SOURCE = textwrap.dedent(
    """
    warehouse: {warehouse}
    landing_dir: landing
    start_date: 2026-10-01
    sources:
      - {{name: crm_contacts, system: crm, kind: contacts, format: csv, path: "crm/contacts/{{date}}/*.csv",
         id_column: contact_id, columns: {{first_name: FirstName, email: Email}}}}
    extract_retries: {{max_retries: {retries}, delay_seconds: 1}}
    alerts: {{command: 'cat > {alert}'}}
    """
)


def _project(tmp_path: Path, contacts: int, warehouse: str = "warehouse/cdm.duckdb", retries: int = 0) -> Path:
    landed = tmp_path / "landing/crm/contacts" / DAY.isoformat()
    landed.mkdir(parents=True)
    (landed / "part1.csv").write_text(
        "contact_id,FirstName,Email\n" + "".join(f"C{i},Ann{i},a{i}@x.com\n" for i in range(contacts))
    )
    return write_config(
        tmp_path, ONE_SOURCE.format(warehouse=warehouse, retries=retries, alert=tmp_path / "alert.json")
    )


def _cdm_run(config: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(prefix or []), CDM, "run", "--config", str(config), "--date", DAY.isoformat()],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )


def _raised_with_context(first: BaseException, then: BaseException) -> BaseException:
    """``then`` raised while handling ``first``, as a failed ROLLBACK in an ``except`` block is."""
    try:
        try:
            raise first
        except BaseException:
            raise then  # noqa: B904 - the implicit context is the point
    except BaseException as exc:
        return exc


# --- secrets never reach the alert hook --------------------------------------------------------


def test_the_alert_command_gets_no_secret_from_the_environment(tmp_path, monkeypatch):
    secrets = {name: f"secret-value-{i}-0123456789abcdef" for i, name in enumerate(sorted(SECRET_ENV_VARS))}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CDM_HARMLESS_SETTING", "kept")
    seen = tmp_path / "env.txt"
    alert = RunFailureAlert("0123abcd-0000", "all_assets", "2026-10-01", "cli", (("run", "failed"),))

    assert send_alert(AlertsConfig(command=f"env > {seen}"), alert) == ["command: delivered (exit status 0)"]

    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert not set(secrets) & set(env)
    assert not any(value in seen.read_text() for value in secrets.values())
    assert env["CDM_HARMLESS_SETTING"] == "kept" and env["CDM_ALERT_RUN_ID"] == "0123abcd-0000"


def test_every_secret_variable_the_code_reads_is_on_the_one_list():
    read = {keyed_hash.KEY_ENV_VAR, encryption.KEY_ENV_VAR, encryption.KEY_FILE_ENV_VAR,
            encryption.NEW_KEY_ENV_VAR, encryption.NEW_KEY_FILE_ENV_VAR}
    assert read <= SECRET_ENV_VARS
    named_in_the_issue = {"CDM_PRIVACY_KEY", "CDM_WAREHOUSE_KEY", "CDM_WAREHOUSE_KEY_FILE", "CDM_WAREHOUSE_NEW_KEY"}
    assert named_in_the_issue <= SECRET_ENV_VARS
    assert without_secrets({"CDM_PRIVACY_KEY": "k", "PATH": "/bin"}) == {"PATH": "/bin"}


# --- a full disk is named, not masked by the failed rollback, and not retried -------------------


def test_a_full_disk_behind_a_failed_rollback_names_the_folder_and_its_free_bytes(tmp_path):
    target = tmp_path / "wh" / "cdm.duckdb.wal"
    target.parent.mkdir()
    full = duckdb.TransactionException(
        f'TransactionContext Error: Failed to commit: Could not write file "{target}": {FULL_DISK}'
    )
    masked = _raised_with_context(full, duckdb.TransactionException(ROLLBACK))

    message = describe_full_disk(masked, fallback_folder=None)

    free = shutil.disk_usage(target.parent).free
    assert message is not None and ROLLBACK not in message
    assert message.startswith(f"the disk holding {target.parent} is full (")
    said_free = int(re.search(r"; ([\d,]+) bytes free of [\d,]+ now\)", message).group(1).replace(",", ""))
    assert abs(said_free - free) < 50_000_000  # the same disk, give or take what other processes wrote
    # An OSError from Python's own writes (ENOSPC) counts too, and names its file's folder.
    enospc = OSError(28, os.strerror(28), str(target))
    assert describe_full_disk(enospc, fallback_folder=None).startswith(f"the disk holding {target.parent} is full")
    # A short write is DuckDB's other way of saying it; the fallback names the warehouse folder.
    short = duckdb.IOException("IO Error: Could not write all bytes to file: wanted=262144 wrote=4096")
    assert describe_full_disk(short, fallback_folder=tmp_path).startswith(f"the disk holding {tmp_path} is full")


def test_a_write_refused_for_another_reason_is_not_called_a_full_disk(tmp_path):
    for text in (
        f'IO Error: Could not write file "{tmp_path}/x": Permission denied',
        f'IO Error: Could not write file "{tmp_path}/x": Read-only file system',
        'Catalog Error: Table with name "contacts" does not exist!',
    ):
        assert describe_full_disk(_raised_with_context(duckdb.IOException(text), duckdb.TransactionException(
            ROLLBACK)), fallback_folder=tmp_path) is None, text


def test_the_extract_step_fails_a_full_disk_at_once_instead_of_retrying(tmp_path):
    full = duckdb.IOException(f'IO Error: Could not write file "{tmp_path}/cdm.duckdb": {FULL_DISK}')
    with pytest.raises(dg.Failure) as failure:
        fail_if_disk_full(_raised_with_context(full, duckdb.TransactionException(ROLLBACK)), tmp_path)
    assert failure.value.allow_retries is False
    assert failure.value.description.startswith(f"the disk holding {tmp_path} is full")
    fail_if_disk_full(duckdb.IOException("IO Error: Could not set lock on file"), tmp_path)  # not full: no-op


def test_the_alert_and_summary_message_of_a_step_names_the_full_disk_not_the_rollback(tmp_path):
    original = SerializableErrorInfo(
        message=f'duckdb.duckdb.TransactionException: Failed to commit: Could not write file "{tmp_path}/w.wal":'
        f" {FULL_DISK}\n", stack=[], cls_name="TransactionException",
    )
    rollback = SerializableErrorInfo(
        message=f"duckdb.duckdb.TransactionException: {ROLLBACK}\n", stack=[], cls_name="TransactionException",
        context=original,
    )
    wrapper = SerializableErrorInfo(
        message="dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op\n",
        stack=[], cls_name="DagsterExecutionStepExecutionError", cause=rollback,
    )
    event = dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.STEP_FAILURE.value, job_name="all_assets",
        event_specific_data=StepFailureData(error=wrapper, user_failure_data=None),
    )
    message = failure_message(event)
    assert message.startswith(f"the disk holding {tmp_path} is full (") and "rollback" not in message


# --- the summary survives a warehouse it cannot read ---------------------------------------------


def _outcome() -> RunOutcome:
    return RunOutcome(
        run_id=str(uuid.uuid4()), success=False, seconds=1.0,
        failures=[("extract_crm_contacts", "IOException: the warehouse could not be opened")],
    )


def test_the_summary_of_a_run_on_a_corrupt_warehouse_is_one_line_about_it_not_a_traceback(tmp_path, capsys):
    config = load_config(_project(tmp_path, contacts=1))
    config.warehouse.parent.mkdir(parents=True)
    config.warehouse.write_bytes(b"not a database" * 30_000)

    print_run_summary(config, DAY, DAY, _outcome())

    _assert_one_note(capsys.readouterr().out, "not a valid DuckDB database")


def test_the_summary_of_a_run_whose_warehouse_is_locked_says_so_in_one_line(tmp_path, capsys):
    config = load_config(_project(tmp_path, contacts=1))
    config.warehouse.parent.mkdir(parents=True)
    with warehouse_lock_held(config.warehouse):
        print_run_summary(config, DAY, DAY, _outcome())

    _assert_one_note(capsys.readouterr().out, "in use by another process")


def _assert_one_note(out: str, why: str) -> None:
    """One line says why the warehouse's figures are missing and how to get the report later."""
    notes = [line for line in out.splitlines() if why in line]
    assert len(notes) == 1 and notes[0].startswith("  warehouse figures not shown: "), out
    assert "`cdm report --run-id " in notes[0] and "governance report:" not in out, out
    assert out.splitlines()[0].startswith("cdm run 2026-10-01: FAILED"), out


# --- the real CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cdm_run_on_a_corrupt_warehouse_alerts_and_ends_with_a_summary_not_a_traceback(tmp_path):
    config = _project(tmp_path, contacts=2)
    (tmp_path / "warehouse").mkdir()
    (tmp_path / "warehouse/cdm.duckdb").write_bytes(b"not a database" * 30_000)

    done = _cdm_run(config)

    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "2026-10-01: FAILED" in done.stdout
    assert "  warehouse figures not shown: " in done.stdout
    assert "alert: command: delivered (exit status 0)" in done.stderr
    alert = json.loads((tmp_path / "alert.json").read_text())
    assert "extract_crm_contacts" in [s["step"] for s in alert["failed_steps"]]
    assert done.stdout.split("(Dagster run ")[1][:8] == alert["run_id"][:8]


def _private_small_disk(folder: Path) -> list[str]:
    """A command prefix that runs its command with a 1 MB tmpfs mounted on ``folder``, visible to
    that process tree only; skips the test where no mount namespace can be made."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("a full disk needs unshare (util-linux) to mount a private tmpfs")
    flags = ["-m"] if os.getuid() == 0 else ["-r", "-m"]
    probe = subprocess.run([unshare, *flags, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here (unshare {' '.join(flags)}: {probe.stderr.strip()})")
    return [unshare, *flags, "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"', str(folder)]


@pytest.mark.slow
def test_cdm_run_on_a_full_disk_says_which_disk_is_full_at_once_without_retries(tmp_path):
    small = tmp_path / "small_disk"
    small.mkdir()
    prefix = _private_small_disk(small)
    # 100,000 contacts (2.5 MB of CSV) cannot fit a 1 MB warehouse disk; retries would be allowed.
    config = _project(tmp_path, contacts=100_000, warehouse="small_disk/cdm.duckdb", retries=2)

    done = _cdm_run(config, prefix)

    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "cannot rollback" not in output, output[-3000:]
    said = (
        rf"failed: extract_crm_contacts: the disk holding {re.escape(str(small))} is full"
        rf" \(a write found no space left; [\d,]+ bytes free of 1,048,576 now\)"
    )
    assert re.search(said, done.stderr), done.stderr[-3000:]
    assert " retry " not in done.stdout, done.stdout
    alert = json.loads((tmp_path / "alert.json").read_text())
    assert re.search(said.removeprefix("failed: extract_crm_contacts: "), alert["failed_steps"][0]["message"])
    with dg.DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        run = instance.get_run_by_id(alert["run_id"])
        assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)


def test_an_unreadable_warehouse_fails_the_step_without_retries(tmp_path):
    """A corrupt file is read the same way by every retry: the step fails at once, saying what to do."""
    from cdm_pipeline.defs.step_failures import fail_if_unreadable_warehouse
    from cdm_pipeline.lib.warehouse import connect

    broken = tmp_path / "cdm.duckdb"
    broken.write_bytes(b"\x00" * 8 + b"not a database at all" * 500)
    with pytest.raises(duckdb.Error) as opening:
        connect(broken)
    with pytest.raises(dg.Failure) as failed:
        try:
            raise RuntimeError("extract failed") from opening.value
        except RuntimeError as exc:
            fail_if_unreadable_warehouse(exc)
    assert failed.value.allow_retries is False
    assert "cdm warehouse verify" in failed.value.description
    fail_if_unreadable_warehouse(RuntimeError("Could not set lock on file"))  # a lock is worth a retry
