"""Alerts on run failure: delivery to a real local webhook and a real shell command, the
run-failure sensor on a real failed run, and `cdm run` alerting by itself through the CLI.

No personal value may reach an alert, and a broken hook is reported, never raised.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import yaml
from dagster._core.execution.plan.objects import StepFailureData, UserFailureData
from dagster._utils.error import SerializableErrorInfo

from cdm_pipeline.config import AlertsConfig, load_config
from cdm_pipeline.defs.automation.alerts import ALERT_SENSOR, build_alert_sensor
from cdm_pipeline.lib.automation.alerts import (
    RunFailureAlert,
    alert_for_run,
    failure_message,
    launcher_of,
    partitions_of,
    send_alert,
)
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env, write_config

SECRET = "s3cr3t-T0KEN"
EMAIL = "jane.doe@example.com"
# A hook that gives up after its timeout returns long before a slow receiver or command would
# have finished: the margins are seconds, so a busy machine cannot make these tests fail.
SLOW_ANSWER = 8


class _Receiver(BaseHTTPRequestHandler):
    """Records every request; answers 200, 500 or (mode "slow") SLOW_ANSWER seconds late."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "raw": body,
             "json": json.loads(body)}
        )
        if self.server.mode == "slow":
            self.server.released.wait(SLOW_ANSWER)
        self.send_response(500 if self.server.mode == "500" else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    # A slow answer ends when the test does; server_close() waits for it, so no request thread
    # writes to its closed socket later, while another test has SIGPIPE's default action.
    server.daemon_threads = False
    server.requests, server.mode, server.released = [], "ok", threading.Event()
    server.port = server.server_address[1]
    server.url = lambda path="/": f"http://127.0.0.1:{server.port}{path}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ALERT = RunFailureAlert(
    run_id="0123abcd-4567-89ef-0123-456789abcdef",
    job_name="all_assets",
    partitions="2026-10-01..2026-10-03",
    launched_by="schedule",
    failed_steps=(
        ("extract_crm_contacts", "source 'crm_contacts': crm/contacts/2026-10-01/a.csv has no column 'Email'"),
        ("stage_orders", "stage_orders: ConversionException: Could not convert string '…' to INT32"),
    ),
)


def test_send_alert_posts_one_json_alert_and_reports_only_the_host(receiver):
    lines = send_alert(AlertsConfig(webhook_url=receiver.url(f"/T000/B000/{SECRET}?key={SECRET}")), ALERT)

    assert lines == [f"webhook 127.0.0.1:{receiver.port}: delivered (HTTP 200)"]
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["method"] == "POST"
    assert request["path"] == f"/T000/B000/{SECRET}?key={SECRET}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["json"] == {
        "text": "cdm_pipeline run 0123abcd (all_assets 2026-10-01..2026-10-03, launched by schedule on"
        f" {socket.gethostname()}) failed: extract_crm_contacts: source 'crm_contacts':"
        " crm/contacts/2026-10-01/a.csv has no column 'Email' (+1 more failed steps)",
        "event": "run_failed",
        "run_id": ALERT.run_id,
        "job": "all_assets",
        "partitions": "2026-10-01..2026-10-03",
        "launched_by": "schedule",
        "failed_steps": [
            {"step": "extract_crm_contacts",
             "message": "source 'crm_contacts': crm/contacts/2026-10-01/a.csv has no column 'Email'"},
            {"step": "stage_orders",
             "message": "stage_orders: ConversionException: Could not convert string '…' to INT32"},
        ],
        "host": socket.gethostname(),
        "project": "cdm_pipeline",
    }


def test_webhook_errors_are_reported_not_raised_and_never_show_the_url_path(receiver):
    receiver.mode = "500"
    refused = send_alert(AlertsConfig(webhook_url=receiver.url(f"/hook/{SECRET}")), ALERT)
    assert refused == [f"webhook 127.0.0.1:{receiver.port}: not delivered (HTTP 500)"]
    assert len(receiver.requests) == 1

    port = _closed_port()
    unreachable = send_alert(AlertsConfig(webhook_url=f"http://127.0.0.1:{port}/hook/{SECRET}"), ALERT)
    assert len(unreachable) == 1
    assert unreachable[0].startswith(f"webhook 127.0.0.1:{port}: not delivered (")
    assert SECRET not in unreachable[0] and "/hook" not in unreachable[0]

    receiver.mode = "slow"
    started = time.monotonic()
    late = send_alert(AlertsConfig(webhook_url=receiver.url(f"/hook/{SECRET}"), timeout_seconds=0.3), ALERT)
    assert time.monotonic() - started < SLOW_ANSWER / 2
    assert late[0].startswith(f"webhook 127.0.0.1:{receiver.port}: not delivered (")
    assert SECRET not in late[0]


def test_command_hook_gets_the_json_on_stdin_and_the_alert_variables(tmp_path):
    body, variables = tmp_path / "alert.json", tmp_path / "env.txt"
    command = (
        f"cat > {shlex.quote(str(body))}; printf '%s\\n' \"$CDM_ALERT_RUN_ID\" \"$CDM_ALERT_JOB\""
        f" \"$CDM_ALERT_PARTITIONS\" \"$CDM_ALERT_SUMMARY\" > {shlex.quote(str(variables))}"
    )
    lines = send_alert(AlertsConfig(command=command), ALERT)

    assert lines == ["command: delivered (exit status 0)"]
    assert json.loads(body.read_text()) == ALERT.payload()
    assert variables.read_text().splitlines() == [
        ALERT.run_id, "all_assets", "2026-10-01..2026-10-03", ALERT.payload()["text"],
    ]


def test_failing_or_slow_command_is_reported_not_raised(tmp_path):
    failing = send_alert(AlertsConfig(command=f"echo '{EMAIL}' >&2; exit 3"), ALERT)
    assert failing == ["command: exit status 3"]

    # The shell's background child must die with it, or a hung hook would pile up processes.
    marker = tmp_path / "still-running"
    started = time.monotonic()
    slow = send_alert(
        AlertsConfig(command=f"(sleep 4; touch {shlex.quote(str(marker))}) & wait", timeout_seconds=1), ALERT
    )
    assert slow == ["command: timed out after 1 s"]
    assert time.monotonic() - started < 3.5
    time.sleep(max(0.0, started + 5 - time.monotonic()))
    assert not marker.exists()


def test_a_hook_that_never_reads_its_input_cannot_kill_the_process_sending_the_alert():
    # `cdm` restores SIGPIPE's default action; a hook exiting without reading a large alert
    # must still leave the sender alive to report it. Run in a child so a regression kills
    # the child, not the test worker.
    script = textwrap.dedent(
        """
        import signal
        from cdm_pipeline.config import AlertsConfig
        from cdm_pipeline.lib.automation.alerts import RunFailureAlert, send_alert
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        steps = tuple((f"extract_{i}", "x" * 2000) for i in range(200))  # ~400 KB: more than a pipe holds
        alert = RunFailureAlert("r" * 36, "all_assets", "", "cli", steps)
        print(send_alert(AlertsConfig(command="exit 3"), alert))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['command: exit status 3']"


def test_both_hooks_are_tried_and_reported_in_order(receiver, tmp_path):
    lines = send_alert(AlertsConfig(webhook_url=receiver.url("/x"), command="exit 0"), ALERT)
    assert lines == [f"webhook 127.0.0.1:{receiver.port}: delivered (HTTP 200)", "command: delivered (exit status 0)"]


def _failure_event(message: str, description: str | None = None) -> dg.DagsterEvent:
    """A STEP_FAILURE event as the event log stores it: an error, or a dg.Failure description."""
    error = SerializableErrorInfo(message=message, stack=[], cls_name="ConversionException")
    user_failure = UserFailureData(label="intentional-failure", description=description) if description else None
    return dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.STEP_FAILURE.value,
        job_name="all_assets",
        event_specific_data=StepFailureData(error=error, user_failure_data=user_failure),
    )


def test_failure_message_masks_quoted_values_but_keeps_our_own_failure_text():
    duckdb_error = (
        f"duckdb.duckdb.ConversionException: Conversion Error: Could not convert string '{EMAIL}' to INT32\n"
        f"LINE 1: SELECT CAST('{EMAIL}' AS INTEGER)\n"
    )
    assert failure_message(_failure_event(duckdb_error)) == (
        "ConversionException: Conversion Error: Could not convert string '…' to INT32"
    )
    own = "source 'crm_contacts': crm/contacts/2026-10-01/a.csv has no column 'Email'"
    assert failure_message(_failure_event(duckdb_error, description=own + "\nmore")) == own


def test_partitions_and_launcher_come_from_the_run_tags():
    assert partitions_of({"dagster/partition": "2026-10-01"}) == "2026-10-01"
    assert partitions_of({"dagster/asset_partition_range_start": "2026-10-01",
                          "dagster/asset_partition_range_end": "2026-10-30"}) == "2026-10-01..2026-10-30"
    assert partitions_of({"dagster/asset_partition_range_start": "2026-10-01",
                          "dagster/asset_partition_range_end": "2026-10-01"}) == "2026-10-01"
    assert partitions_of({}) == ""
    sensor_tags = {"cdm/launched_by": "landing_sensor", "dagster/sensor_name": "landing_files"}
    assert launcher_of(sensor_tags) == "landing_sensor"
    assert launcher_of({"dagster/schedule_name": "nightly"}) == "schedule"
    assert launcher_of({"dagster/sensor_name": "x"}) == "sensor"
    assert launcher_of({"dagster/backfill": "abc"}) == "backfill"
    assert launcher_of({}) == "ui"


# --- the run-failure sensor, on real failed runs --------------------------------------------

DAYS = dg.DailyPartitionsDefinition(start_date="2026-10-01")


@dg.asset(partitions_def=DAYS)
def converts_a_value():
    raise ValueError(f"Could not convert string '{EMAIL}' to INT32")


@dg.asset(partitions_def=DAYS)
def checks_a_column():
    raise dg.Failure(description="source 'crm_contacts': crm/a.csv has no column 'Email'", allow_retries=False)


@dg.asset
def succeeds():
    return 1


@pytest.fixture(scope="module")
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _failed_run(instance, tags=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [converts_a_value, checks_a_column], instance=instance, partition_key="2026-10-01",
        raise_on_error=False, tags=tags,
    )
    assert not result.success
    return result


def _config(tmp_path, **alerts):
    document = {
        "warehouse": "wh/cdm.duckdb", "landing_dir": "landing",
        "sources": [{"name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
                     "path": "crm/{date}/*.csv", "id_column": "contact_id"}],
    }
    if alerts:
        document["alerts"] = alerts
    return load_config(write_config(tmp_path, yaml.safe_dump(document)))


def _evaluate(sensor, instance, result):
    context = dg.build_run_status_sensor_context(
        sensor_name=ALERT_SENSOR,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    return sensor(context)


def test_sensor_alerts_once_about_a_real_failed_run_without_personal_values(receiver, instance, tmp_path):
    result = _failed_run(instance)
    sensor = build_alert_sensor(_config(tmp_path, webhook_url=receiver.url(f"/hook/{SECRET}")))
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    assert _evaluate(sensor, instance, result) is None
    assert len(receiver.requests) == 1
    sent = receiver.requests[0]["json"]
    assert sent["run_id"] == result.run_id
    assert sent["job"] == result.dagster_run.job_name
    assert sent["partitions"] == "2026-10-01"
    assert sent["launched_by"] == "ui"
    assert sorted(sent["failed_steps"], key=lambda s: s["step"]) == [
        {"step": "checks_a_column", "message": "source 'crm_contacts': crm/a.csv has no column 'Email'"},
        # A plain exception reaches the event log wrapped by Dagster: its cause is what shows,
        # with the value it quoted masked.
        {"step": "converts_a_value", "message": "ValueError: Could not convert string '…' to INT32"},
    ]
    assert result.run_id[:8] in sent["text"]
    assert EMAIL.encode() not in receiver.requests[0]["raw"]


def test_sensor_skips_runs_of_cdm_run_and_configs_without_a_hook(receiver, instance, tmp_path):
    sensor = build_alert_sensor(_config(tmp_path, webhook_url=receiver.url("/hook")))
    skipped = _evaluate(sensor, instance, _failed_run(instance, tags={"cdm/launched_by": "cli"}))
    assert isinstance(skipped, dg.SkipReason)
    assert "cdm run" in skipped.skip_message

    silent = build_alert_sensor(_config(tmp_path))
    assert silent.default_status == dg.DefaultSensorStatus.STOPPED
    skipped = _evaluate(silent, instance, _failed_run(instance))
    assert isinstance(skipped, dg.SkipReason)
    assert "no alert hook" in skipped.skip_message
    assert receiver.requests == []


def test_a_run_failed_before_its_steps_gets_a_run_entry(instance):
    result = dg.materialize([succeeds], instance=instance, tags={"dagster/backfill": "b1"})
    run = instance.get_run_by_id(result.run_id)
    # What the CLI does to a run whose process died: the run fails with no step failure.
    instance.report_run_failed(run, message="The cdm process running this run has died.")
    alert = alert_for_run(instance, run)
    assert alert.failed_steps == (("run", "the run failed before its steps finished"),)
    assert (alert.partitions, alert.launched_by) == ("", "backfill")


# --- `cdm run` alerting by itself -------------------------------------------------------------

CLI_CONFIG = textwrap.dedent(
    """
    warehouse: warehouse/cdm.duckdb
    landing_dir: landing
    start_date: 2026-10-01
    sources:
      - {{name: crm_contacts, system: crm, kind: contacts, format: csv, path: "crm/contacts/{{date}}/*.csv",
         id_column: contact_id, columns: {{first_name: FirstName}}}}
    alerts:
      webhook_url: {url}
      timeout_seconds: 5
    """
)


@pytest.mark.slow
def test_failed_cli_run_sends_one_alert_naming_the_run_and_the_extract_step(receiver, tmp_path):
    landed = tmp_path / "landing/crm/contacts/2026-10-01"
    landed.mkdir(parents=True)
    # The export lost its FirstName column; the address in it must not travel with the alert.
    (landed / "contacts.csv").write_text(f"contact_id,Email\nC1,{EMAIL}\n")
    config = write_config(tmp_path, CLI_CONFIG.format(url=receiver.url(f"/hook/{SECRET}")))

    done = subprocess.run(
        [CDM, "run", "--config", str(config), "--date", "2026-10-01"],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert len(receiver.requests) == 1
    sent = receiver.requests[0]["json"]
    printed_id = done.stdout.split("(Dagster run ")[1][:8]
    assert sent["run_id"].startswith(printed_id)
    assert sent["launched_by"] == "cli" and sent["partitions"] == "2026-10-01"
    assert [step["step"] for step in sent["failed_steps"]] == ["extract_crm_contacts"]
    assert "has no column 'FirstName'" in sent["failed_steps"][0]["message"]
    assert f"  alert: webhook 127.0.0.1:{receiver.port}: delivered (HTTP 200)" in done.stderr.splitlines()
    assert EMAIL.encode() not in receiver.requests[0]["raw"]
    assert EMAIL not in output and SECRET not in output
