"""What ``cdm run`` shows while its Dagster run goes.

On a terminal, one status line rewritten in place: the steps done out of the total, the step
running and how long it has been running (``[5/14] stage_contacts  12.3 s``). Anywhere else —
cron mail, CI logs, a pipe — one plain line per finished step (``[5/14] stage_contacts ok
12.3 s``) and no escape codes, so a log file reads like the terminal's history. The events come
from the run's event log (runner.py follows it); this module only keeps count and draws.
"""

from __future__ import annotations

import time
from typing import TextIO

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
RETRY = "retry"  # an attempt failed; Dagster runs the step again

_CLEAR_TO_END = "\x1b[K"


def finished_line(done: int, total: int | None, step: str, outcome: str, seconds: float | None) -> str:
    """A finished step (or a failed attempt, ``retry``), as plain output prints it."""
    took = f" {seconds:.1f} s" if seconds is not None else ""
    return f"{_count(done, total)} {step} {outcome}{took}"


def status_line(
    done: int,
    total: int | None,
    running: dict[str, float],
    waiting: dict[str, float],
    now: float,
    since: float,
    width: int,
) -> str:
    """The terminal's status line, cut to ``width`` so that it never wraps.

    Args:
        done: Steps finished (succeeded, failed or skipped).
        total: Steps in the run's plan; None until the run exists.
        running: Started steps and when they started (seconds since the epoch).
        waiting: Steps waiting to be retried and when their attempt failed.
        now: The time to measure from.
        since: When the run (or the last step) began, shown when nothing runs.
        width: The terminal's width.
    """
    if running:
        step, started = min(running.items(), key=lambda item: item[1])  # the longest-running
        more = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
        text = f"{_count(done, total)} {step}  {now - started:.1f} s{more}"
    elif waiting:
        step, failed = min(waiting.items(), key=lambda item: item[1])
        text = f"{_count(done, total)} {step} waiting to retry  {now - failed:.1f} s"
    else:
        if total is None:
            what = "starting the run"
        else:
            what = "starting" if done == 0 else "finishing the run" if done >= total else "next step"
        text = f"{_count(done, total)} {what}  {now - since:.1f} s"
    return text[: max(width - 1, 0)]


def _count(done: int, total: int | None) -> str:
    return f"[{done}/{total if total is not None else '?'}]"


class RunProgress:
    """Counts a run's steps from its events and shows them on ``stream``.

    Plain output prints a line as each step finishes and flushes it (a pipe would otherwise hold
    it until the run ends). Terminal output redraws the status line on ``refresh`` and prints a
    lasting line only for a failed step or attempt; ``close`` erases the status line, so what
    follows (the run summary) prints exactly as without progress.
    """

    def __init__(self, stream: TextIO, terminal: bool, width: int = 80, clock=time.time):
        self.stream: TextIO | None = stream
        self.terminal = terminal
        self.width = width
        self.clock = clock
        self.total: int | None = None
        self.done = 0
        self.running: dict[str, float] = {}
        self.waiting: dict[str, float] = {}
        self.since = clock()

    def planned(self, steps: int) -> None:
        self.total = steps
        self.since = self.clock()

    def started(self, step: str, at: float) -> None:
        # A step process starting and the step starting in it are two events: keep the first.
        self.running.setdefault(step, at)
        self.waiting.pop(step, None)

    def finished(self, step: str, outcome: str, at: float) -> None:
        started = self.running.pop(step, None)
        seconds = at - started if started is not None else None
        if outcome == RETRY:
            self.waiting[step] = at
        else:
            self.waiting.pop(step, None)
            self.done += 1
        self.since = at
        if not self.terminal:
            self._write(finished_line(self.done, self.total, step, outcome, seconds) + "\n")
        elif outcome in (FAILED, RETRY):
            self._write("\r" + finished_line(self.done, self.total, step, outcome, seconds) + _CLEAR_TO_END + "\n")
            self.refresh()

    def refresh(self) -> None:
        """Redraw the status line (terminal only)."""
        if self.terminal:
            line = status_line(
                self.done, self.total, self.running, self.waiting, self.clock(), self.since, self.width
            )
            self._write("\r" + line + _CLEAR_TO_END)

    def close(self) -> None:
        if self.terminal:
            self._write("\r" + _CLEAR_TO_END)

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.stream = None  # the reader has gone; the run goes on without progress
