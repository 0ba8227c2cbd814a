"""Telling someone a run failed: the alert, built from a run's event log, and its delivery.

An alert goes to a webhook (JSON POST, the shape Slack/Teams-style incoming webhooks accept), to a
shell command (the same JSON on its standard input), to both or, by default, nowhere. Delivery
never raises: a broken alert hook must not hide the run's own failure, so every hook gets one
short line saying what happened instead.

An alert carries no personal data: step messages come only through :func:`failure_message`,
which masks quoted values, and a webhook's URL (which often embeds a secret token) is reported
as its host only. A command hook's environment holds none of the pipeline's secrets (``secrets_env``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dagster as dg

from cdm_pipeline.config import AlertsConfig
from cdm_pipeline.lib.disk_space import describe_full_disk_in_texts
from cdm_pipeline.lib.secrets_env import without_secrets
from cdm_pipeline.lib.warehouse import scrub_values

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

PROJECT = "cdm_pipeline"
LAUNCHED_BY_TAG = "cdm/launched_by"
NO_STEP_FAILED = ("run", "the run failed before its steps finished")
# Dagster's own tags, in the order that names who launched a run without our tag.
_DAGSTER_LAUNCHERS = (
    ("dagster/schedule_name", "schedule"),
    ("dagster/sensor_name", "sensor"),
    ("dagster/backfill", "backfill"),
)


@dataclass(frozen=True)
class RunFailureAlert:
    """What an alert says about one failed run; ``failed_steps`` messages are already scrubbed."""

    run_id: str
    job_name: str
    partitions: str  # "2026-10-01", "2026-10-01..2026-10-30" or "" when unpartitioned
    launched_by: str
    failed_steps: tuple[tuple[str, str], ...]
    host: str = field(default_factory=socket.gethostname)

    @property
    def summary(self) -> str:
        """One line for a chat channel: which run, where, and the first failed step."""
        what = self.job_name + (f" {self.partitions}" if self.partitions else "")
        line = f"{PROJECT} run {self.run_id[:8]} ({what}, launched by {self.launched_by} on {self.host}) failed"
        if self.failed_steps:
            step, message = self.failed_steps[0]
            line += f": {step}: {message}"
            if len(self.failed_steps) > 1:
                line += f" (+{len(self.failed_steps) - 1} more failed steps)"
        return " ".join(line.split())  # one line, whatever a message held

    def payload(self) -> dict:
        """The JSON document sent to every hook."""
        return {
            "text": self.summary,
            "event": "run_failed",
            "run_id": self.run_id,
            "job": self.job_name,
            "partitions": self.partitions,
            "launched_by": self.launched_by,
            "failed_steps": [{"step": step, "message": message} for step, message in self.failed_steps],
            "host": self.host,
            "project": PROJECT,
        }


def failure_message(event: dg.DagsterEvent) -> str:
    """The first line of a step's error, without the exception's module path or quoted values."""
    data = event.step_failure_data
    if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
        # Our own dg.Failure: already a clean sentence, whose quotes name sources and columns.
        text, scrub = data.user_failure_data.description, False
    elif data is not None and data.error is not None and data.error.message.strip():
        # A full disk hides behind the ROLLBACK that failed after it: say which disk, not that.
        full_disk = describe_full_disk_in_texts(error.message for error in _error_chain(data.error))
        if full_disk is not None:
            return full_disk
        # Anything else may quote the value it choked on ("Could not convert string 'a@b.c'").
        # Dagster wraps an exception raised in a step ("Error occurred while executing op"): the
        # cause is what says what went wrong.
        error = data.error.cause if data.error.cause is not None and data.error.cause.message.strip() else data.error
        text, scrub = error.message, True
    else:
        return "step failed"
    first = text.strip().splitlines()[0]
    first = re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", first)  # dagster._core.errors.X: -> X:
    return scrub_values(first) if scrub else first


def _error_chain(error: SerializableErrorInfo) -> list[SerializableErrorInfo]:
    """A step's error and every error it was raised from or while handling."""
    chain, pending = [], [error]
    while pending:
        current = pending.pop(0)
        chain.append(current)
        pending += [e for e in (current.cause, current.context) if e is not None]
    return chain


def partition_span(first: str, last: str) -> str:
    """How an alert names the partitions ``first``..``last`` of a run (one day: just that day)."""
    return first if first == last else f"{first}..{last}"


def partitions_of(tags: dict[str, str]) -> str:
    """The partition or partition range a run covered, from its tags; "" when unpartitioned."""
    if tags.get("dagster/partition"):
        return tags["dagster/partition"]
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    if first and last:
        return partition_span(first, last)
    return first or last or ""


def launcher_of(tags: dict[str, str]) -> str:
    """Who started a run: our own tag, else what Dagster's tags say, else someone in the UI."""
    if tags.get(LAUNCHED_BY_TAG):
        return tags[LAUNCHED_BY_TAG]
    return next((name for tag, name in _DAGSTER_LAUNCHERS if tag in tags), "ui")


def alert_for_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunFailureAlert:
    """The alert for a failed run: its failed steps, read from the instance's event log."""
    records = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    failed = tuple(
        (record.dagster_event.step_key or "run", failure_message(record.dagster_event))
        for record in records
        if record.dagster_event is not None
    )
    return RunFailureAlert(
        run_id=run.run_id,
        job_name=run.job_name,
        partitions=partitions_of(dict(run.tags)),
        launched_by=launcher_of(dict(run.tags)),
        failed_steps=failed or (NO_STEP_FAILED,),
    )


def send_alert(alerts: AlertsConfig, alert: RunFailureAlert) -> list[str]:
    """Deliver ``alert`` to every configured hook; one line per hook saying what happened."""
    body = json.dumps(alert.payload()).encode("utf-8")
    lines = []
    if alerts.webhook_url:
        lines.append(_post(alerts.webhook_url, body, alerts.timeout_seconds))
    if alerts.command:
        try:
            lines.append(_run_command(alerts.command, body, alert, alerts.timeout_seconds))
        except Exception as exc:  # never let the alert hide the failure it reports
            lines.append(f"command: not run ({exc.__class__.__name__})")
    return lines


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body: call that "not delivered".
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _post(url: str, body: bytes, timeout: float) -> str:
    where = f"webhook {_host_of(url)}"
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.build_opener(_NoRedirect()).open(request, timeout=timeout) as response:
            return f"{where}: delivered (HTTP {response.status})"
    except urllib.error.HTTPError as exc:
        return f"{where}: not delivered (HTTP {exc.code})"
    except urllib.error.URLError as exc:
        return f"{where}: not delivered ({_reason(exc.reason)})"
    except TimeoutError:
        return f"{where}: not delivered (no answer within {timeout:g} s)"
    except Exception as exc:  # never let the alert hide the failure it reports
        return f"{where}: not delivered ({_reason(exc)})"


def _host_of(url: str) -> str:
    """``host[:port]`` of a URL: its path and query are often the webhook's secret."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a malformed port: the request will fail and say so
        port = None
    return f"{parts.hostname}:{port}" if port else str(parts.hostname)


def _reason(reason: object) -> str:
    # Never str(exc) of an arbitrary error: it could repeat the URL.
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return reason.__class__.__name__ if isinstance(reason, BaseException) else "unreachable"


def _run_command(command: str, body: bytes, alert: RunFailureAlert, timeout: float) -> str:
    env = {
        # The hook is someone else's program: it gets no key (privacy, warehouse) of ours.
        **without_secrets(os.environ),
        "CDM_ALERT_RUN_ID": alert.run_id,
        "CDM_ALERT_JOB": alert.job_name,
        "CDM_ALERT_PARTITIONS": alert.partitions,
        "CDM_ALERT_SUMMARY": alert.summary,
    }
    # The JSON comes from a file, not a pipe: a hook that never reads its input (`logger ...`)
    # would otherwise close the pipe under us, and `cdm` restores SIGPIPE's default action (for
    # `cdm ... | head`), so writing to it would kill the very process reporting the failure.
    with tempfile.TemporaryFile() as stdin:
        stdin.write(body)
        stdin.seek(0)
        try:
            # Its own session, so a timeout stops whatever the shell started, not only the shell.
            process = subprocess.Popen(
                ["/bin/sh", "-c", command], stdin=stdin, env=env, start_new_session=True,
                # The hook's own output may echo anything; it stays out of our output and logs.
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            return f"command: not started ({_reason(exc)})"
        with process:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return f"command: timed out after {timeout:g} s"
    if process.returncode == 0:
        return "command: delivered (exit status 0)"
    if process.returncode < 0:
        return f"command: killed by signal {-process.returncode}"
    return f"command: exit status {process.returncode}"
