"""`cdm run`'s progress: a status line rewritten in place on a terminal, plain lines elsewhere.

The events are fed by hand here, as runner.py feeds them from the run's event log; the real run's
plain lines are checked in test_cli_run.py.
"""

from __future__ import annotations

import io

from cdm_pipeline.cli.progress import FAILED, OK, RETRY, SKIPPED, RunProgress, finished_line, status_line

T0 = 1_800_000_000.0  # event timestamps are seconds since the epoch


class _Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _feed(progress: RunProgress, clock: _Clock) -> None:
    """A three-step run: one succeeds after a retry, one fails, the last is skipped."""
    progress.planned(3)
    progress.started("extract_crm_contacts", T0 + 1.0)  # its process starts ...
    progress.started("extract_crm_contacts", T0 + 2.5)  # ... then the step in it: the first counts
    progress.finished("extract_crm_contacts", RETRY, T0 + 3.0)
    progress.started("extract_crm_contacts", T0 + 10.0)
    progress.finished("extract_crm_contacts", OK, T0 + 14.25)
    progress.started("stage_contacts", T0 + 15.0)
    clock.now = T0 + 27.34
    progress.refresh()
    progress.finished("stage_contacts", FAILED, T0 + 30.5)
    progress.finished("resolve_identities", SKIPPED, T0 + 30.6)


def test_plain_output_is_one_line_per_finished_step_with_its_count_outcome_and_seconds():
    out, clock = io.StringIO(), _Clock()
    progress = RunProgress(out, terminal=False, clock=clock)
    _feed(progress, clock)
    progress.close()
    assert out.getvalue().splitlines() == [
        "[0/3] extract_crm_contacts retry 2.0 s",
        "[1/3] extract_crm_contacts ok 4.2 s",
        "[2/3] stage_contacts failed 15.5 s",
        "[3/3] resolve_identities skipped",
    ]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_terminal_output_rewrites_one_status_line_and_keeps_only_failures():
    out, clock = io.StringIO(), _Clock()
    progress = RunProgress(out, terminal=True, width=80, clock=clock)
    _feed(progress, clock)
    progress.close()
    written = out.getvalue()
    # Each redraw goes back to the line's start and clears what a longer line left behind.
    assert "\r[1/3] stage_contacts  12.3 s\x1b[K" in written
    assert written.endswith("\r\x1b[K")  # erased: the run summary prints as it always did
    lasting = [frame.split("\x1b[K")[0] for frame in written.split("\r") if frame.endswith("\n")]
    assert lasting == ["[0/3] extract_crm_contacts retry 2.0 s", "[2/3] stage_contacts failed 15.5 s"]
    assert "ok" not in "".join(lasting) and "skipped" not in written


def test_the_status_line_names_the_longest_running_step_and_counts_the_others():
    running = {"stage_orders": T0 + 5.0, "stage_contacts": T0 + 1.0, "stage_web_events": T0 + 3.0}
    assert status_line(4, 14, running, {}, T0 + 13.3, T0, 80) == "[4/14] stage_contacts  12.3 s (+2 more)"


def test_the_status_line_between_steps_says_what_the_run_is_doing():
    assert status_line(0, None, {}, {}, T0 + 2.0, T0, 80) == "[0/?] starting the run  2.0 s"
    assert status_line(0, 14, {}, {}, T0 + 2.0, T0, 80) == "[0/14] starting  2.0 s"
    assert status_line(6, 14, {}, {}, T0 + 0.4, T0, 80) == "[6/14] next step  0.4 s"
    assert status_line(14, 14, {}, {}, T0 + 0.4, T0, 80) == "[14/14] finishing the run  0.4 s"
    waiting = {"extract_crm_contacts": T0}
    assert status_line(0, 14, {}, waiting, T0 + 29.0, T0, 80) == "[0/14] extract_crm_contacts waiting to retry  29.0 s"


def test_the_status_line_never_wraps_a_narrow_terminal():
    line = status_line(5, 14, {"governance__privacy_requests": T0}, {}, T0 + 1.0, T0, 24)
    assert line == "[5/14] governance__priv" and len(line) == 23


def test_finished_line():
    assert finished_line(12, 14, "build_marts", OK, 61.04) == "[12/14] build_marts ok 61.0 s"
    assert finished_line(3, None, "stage_orders", SKIPPED, None) == "[3/?] stage_orders skipped"


def test_a_reader_that_goes_away_stops_the_progress_not_the_run():
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    progress = RunProgress(ClosedPipe(), terminal=False)
    progress.planned(2)
    progress.finished("extract_crm_contacts", OK, T0)  # raises nothing
    progress.finished("stage_contacts", OK, T0)
    assert progress.done == 2 and progress.stream is None
