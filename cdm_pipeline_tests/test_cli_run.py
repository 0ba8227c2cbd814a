"""`cdm run` through the real CLI in a subprocess: retries while the warehouse is locked, failures
and their alerts, and clean-up after a killed run. The 30-partition backfill from the CLI and the
UI is in test_cli_ui.py.

`materialize()` runs everything in one process and could never show a DuckDB lock error; only
separate step processes can, so these tests run the console script.
"""

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, REPO_ROOT, cli_env, warehouse_lock_held, write_config
from cdm_pipeline_tests.run_fixtures import CONFIG, cdm, land_days, run_id_prefix, table_snapshot

# Steps of one night's run: 5 extracts, 4 stagings, identity, marts, audience files, the analyst
# warehouse, privacy requests, the retention purge, the reports.
STEPS = 16

pytestmark = pytest.mark.slow


def _events(home: Path, event_type) -> list:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [e for run in instance.get_runs() for e in instance.all_logs(run.run_id, of_type=event_type)]


def _events_now(home: Path, event_type) -> list:
    """Events so far; none while the run is still creating its event-log database."""
    try:
        return _events(home, event_type)
    except Exception:  # SQLite "database is locked" or a half-created run database
        return []


def test_extract_retries_while_the_warehouse_is_locked_and_a_failed_run_alerts_and_keeps_the_old_partition(tmp_path):
    import dagster as dg

    land_days(tmp_path / "landing", 2)
    config = write_config(
        tmp_path,
        CONFIG + "extract_retries: {max_retries: 3, delay_seconds: 1}\n"
        + f"alerts: {{command: 'cat > {tmp_path}/alert.json'}}\n",
    )
    home = tmp_path / ".dagster_home"
    # The run storage exists before the run starts, so reading it while the run writes never
    # races the run's own creation of its SQLite files.
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    dg.DagsterInstance.from_config(str(home)).dispose()
    warehouse = tmp_path / "warehouse" / "cdm.duckdb"
    warehouse.parent.mkdir()
    # Someone has the warehouse open in another process (a DuckDB shell, a notebook): the first
    # extract attempt cannot get the file lock. The lock goes once the step is up for retry.
    with warehouse_lock_held(warehouse):
        run = subprocess.Popen(
            [CDM, "run", "--config", str(config), "--date", "2026-10-02"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        )
        deadline = time.monotonic() + HANG_TIMEOUT
        while not _events_now(home, dg.DagsterEventType.STEP_UP_FOR_RETRY):
            assert run.poll() is None and time.monotonic() < deadline, "no extract step went up for retry"
            time.sleep(1)
    stdout, stderr = run.communicate(timeout=HANG_TIMEOUT)
    assert run.returncode == 0, stderr[-3000:]
    # Not a terminal: the failed attempt is a plain line of its own.
    assert re.search(rf"^\[\d+/{STEPS}\] extract_\w+ retry \d+\.\d s$", stdout, re.MULTILINE), stdout
    retried = {e.step_key for e in _events(home, dg.DagsterEventType.STEP_UP_FOR_RETRY)}
    assert retried and all(step.startswith("extract_") for step in retried)
    assert retried <= {e.step_key for e in _events(home, dg.DagsterEventType.STEP_SUCCESS)}
    assert not (tmp_path / "alert.json").exists()
    before = table_snapshot(warehouse)
    assert len(before["raw.crm_contacts"]) == 2

    # The CRM export dropped its Email column: an error in the file, which no retry would fix.
    broken = tmp_path / "landing/crm/contacts/2026-10-02/part1.csv"
    broken.write_text("contact_id,FirstName\nC21,Zed\n")
    done = cdm("run", "--config", str(config), "--date", "2026-10-02")
    assert done.returncode == 1
    assert "2026-10-02: FAILED" in done.stdout
    assert re.search(rf"^\[\d+/{STEPS}\] extract_crm_contacts failed \d+\.\d s$", done.stdout, re.MULTILINE)
    assert (
        "failed: extract_crm_contacts: source 'crm_contacts': crm/contacts/2026-10-02/part1.csv"
        " has no column 'Email'" in done.stderr
    )
    assert "alert: command: delivered (exit status 0)" in done.stderr
    alert = json.loads((tmp_path / "alert.json").read_text())
    assert alert["run_id"].startswith(run_id_prefix(done.stdout)) and alert["partitions"] == "2026-10-02"
    assert [s["step"] for s in alert["failed_steps"]] == ["extract_crm_contacts"]
    assert "Zed" not in done.stdout + done.stderr + json.dumps(alert)
    # The failed night has its governance report too, written by the CLI as the run's
    # reports step never ran; the insights dashboard is the successful run's.
    page = Path(next(line for line in done.stdout.splitlines() if "governance report:" in line).split(": ", 1)[1])
    html = page.read_text()
    assert "failed: extract_crm_contacts" in html and alert["run_id"] in html and "Zed" not in html
    assert "insights dashboard:" not in done.stdout
    failed_run = next(r for r in dg.DagsterInstance.from_config(str(home)).get_runs() if r.run_id == alert["run_id"])
    assert failed_run.status == dg.DagsterRunStatus.FAILURE
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.all_logs(alert["run_id"], of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    after = table_snapshot(warehouse)
    assert after["raw.crm_contacts"] == before["raw.crm_contacts"]


def _progress_lines(stdout: str) -> list[tuple[int, int, str, str]]:
    """(count, total, step, outcome) of every plain progress line `cdm run` printed."""
    return [
        (int(m[1]), int(m[2]), m[3], m[4])
        for m in re.finditer(r"^\[(\d+)/(\d+)\] (\w+) (ok|failed|skipped|retry)(?: \d+\.\d s)?$", stdout, re.MULTILINE)
    ]


def test_cli_run_frees_the_pool_slot_of_a_run_whose_process_died(tmp_path):
    """Also the real run behind two other promises: a config without start_date runs the day its
    exports begin (2026-01-15, long before the demo's first day), and without a terminal `cdm run`
    prints one plain line per finished step before its summary."""
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRun

    land_days(tmp_path / "landing", 1)
    for day in (tmp_path / "landing").glob("*/*/2026-10-01"):
        day.rename(day.with_name("2026-01-15"))
    config = write_config(tmp_path, CONFIG.replace("start_date: 2026-10-01\n", ""))
    home = tmp_path / ".dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # as `cdm` itself does

    # A cdm run killed with -9 mid-step: its run still says STARTED and it holds the only slot.
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = str(uuid.uuid4())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_run(
            DagsterRun(
                job_name="all_assets",
                run_id=run_id,
                status=dg.DagsterRunStatus.STARTED,
                tags={
                    "cdm/launched_by": "cli",
                    "cdm/pid": str(dead.pid),
                    "cdm/host": __import__("socket").gethostname(),
                },
            )
        )
        # The pool exists once a step has asked for it; dagster.yaml's default limit sizes it.
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("duckdb")
        claim = instance.event_log_storage.claim_concurrency_slot("duckdb", run_id, "extract_crm_contacts")
        assert claim.is_claimed

    done = cdm("run", "--config", str(config), "--date", "2026-01-15")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "released the pool slots of 1 run(s) whose process had died" in done.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0
        ours = next(r for r in instance.get_runs() if r.run_id.startswith(run_id_prefix(done.stdout)))
        assert ours.tags["dagster/asset_partition_range_start"] == "2026-01-15"
        planned = instance.get_execution_plan_snapshot(ours.execution_plan_snapshot_id).step_keys_to_execute
        succeeded = [e.step_key for e in instance.all_logs(ours.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)]

    lines = _progress_lines(done.stdout)
    assert len(planned) == STEPS and sorted(succeeded) == sorted(planned)
    assert lines == [(n, STEPS, step, "ok") for n, step in enumerate(succeeded, start=1)]
    assert done.stdout.startswith(f"[1/{STEPS}] ") and "\x1b" not in done.stdout and "\r" not in done.stdout
    summary = done.stdout.splitlines()[len(lines)]
    assert summary.startswith("cdm run 2026-01-15: succeeded in ")




def test_a_step_that_ends_without_success_or_failure_gives_its_pool_slot_back(tmp_path):
    """A CI run hung here: its first step's process ended without a success or failure event,
    Dagster gave the step up but kept its `duckdb` pool slot, and the run's other steps waited
    for that slot forever. Dagster's own execution state and pool, driven as its multiprocess
    executor drives them when a step process ends."""
    import logging
    from types import SimpleNamespace

    import dagster as dg
    from dagster._core.errors import DagsterInvariantViolationError
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.plan.active import ActiveExecution
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
    from dagster._core.execution.retries import RetryMode

    from cdm_pipeline.defs.jobs import free_the_slot_of_a_step_that_died

    free_the_slot_of_a_step_that_died()  # done when the project's definitions load

    @dg.op(pool="duckdb")
    def vanished() -> None: ...

    @dg.op(pool="duckdb")
    def independent() -> None: ...

    @dg.job
    def dying_step():
        vanished()
        independent()

    home = tmp_path / ".dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("duckdb")
        plan = create_execution_plan(dying_step)
        run = instance.create_run_for_job(dying_step, execution_plan=plan)
        job_context = SimpleNamespace(log=logging.getLogger("dying_step"))
        with InstanceConcurrencyContext(instance, run) as pool:
            active = ActiveExecution(plan, RetryMode.DISABLED, max_concurrent=1, instance_concurrency_context=pool)
            with pytest.raises(DagsterInvariantViolationError, match="without completing"):
                with active:
                    (first,) = active.get_steps_to_execute()
                    assert active.get_steps_to_execute() == []  # the one slot is taken

                    active.verify_complete(job_context, first.key)  # process ended, no event

                    # Before the fix: nothing, here and forever after.
                    (second,) = active.get_steps_to_execute()
                    assert {first.key, second.key} == {"vanished", "independent"}
            slots = instance.event_log_storage.get_concurrency_info("duckdb")
            assert [s.step_key for s in slots.claimed_slots] == [second.key]


def test_processes_starting_together_on_a_new_run_storage_do_not_race_to_create_it(tmp_path):
    # `cdm ui` and `cdm run` started at once on a new folder both created the SQLite storage; the
    # loser failed with "table alembic_version already exists" (seen in CI). Six processes start
    # at the same moment: each must open the storage and find the others' runs table.
    config = write_config(tmp_path, CONFIG)
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    script = (
        "import os, sys, time, dagster as dg\n"
        "from cdm_pipeline.config import load_config\n"
        "from cdm_pipeline.runner import use_dagster_home\n"
        "open(os.path.join(sys.argv[3], str(os.getpid())), 'w').close()\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.005)\n"
        "home = use_dagster_home(load_config(sys.argv[1]))\n"
        "with dg.DagsterInstance.get() as instance: print(len(instance.get_runs()))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(config), str(go), str(ready)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        for _ in range(6)
    ]
    # All six imported and waiting (however long importing takes on a busy machine), then go.
    deadline = time.monotonic() + HANG_TIMEOUT
    while len(list(ready.iterdir())) < 6:
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, "a process never got ready"
        time.sleep(0.1)
    go.touch()
    outcomes = [p.communicate(timeout=HANG_TIMEOUT) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, [err[-1500:] for _, err in outcomes]
    assert [out.strip() for out, _ in outcomes] == ["0"] * 6
    assert (tmp_path / ".dagster_home" / ".cdm_storage_ready").exists()
