"""Progress on stderr: one line per finished stage, and a live count while images are featurized.

    list 22,688 images · 0.9s
    weights random · 6.8s
    featurize 4,096/22,688 images · 183 img/s · ETA 1m42s      (live on a terminal)
    featurize 22,688 images · 206 img/s · 1m50s
    ...

On a terminal the featurize line is redrawn in place; elsewhere (EMR step logs, a pipe) a line is
printed every `FEATURIZER_PROGRESS_INTERVAL` seconds (default 30) and at each further tenth of the
images. The count comes from Spark's status store: the images of the featurize tasks that have
finished. It is exact, and moves a task at a time (a task holds at most 16 model batches, see
job.session.plan_partitions); the elapsed time, rate and ETA move in between. (Live per-record
metrics were measured and rejected: the scan's row count runs ahead of the model by whatever the
socket to the Python worker buffers, and the task-level counts are only reported at task end.)
`--quiet` turns all of it off; stdout never carries progress.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TextIO

INTERVAL_ENV = "FEATURIZER_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
TTY_REFRESH_S = 0.5


def duration(seconds: float) -> str:
    """0.4s, 12.3s, 1m42s, 2h05m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate_text(per_second: float) -> str:
    """183 img/s; 2.5 img/s below 10."""
    return f"{per_second:,.0f} img/s" if per_second >= 10 else f"{per_second:.1f} img/s"


def count_line(name: str, count: int, total: int, elapsed: float) -> str:
    """`featurize 4,096/22,688 images · 183 img/s · ETA 1m42s` (the rate and ETA once images are counted)."""
    head = f"{name} {count:,}/{total:,} images"
    if count <= 0 or elapsed <= 0:
        return f"{head} · {duration(elapsed)}"
    rate = count / elapsed
    eta = f" · ETA {duration(max(total - count, 0) / rate)}" if count < total else ""
    return f"{head} · {rate_text(rate)}{eta}"


def interval_s() -> float:
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


class Progress:
    """Where the run reports its stages; `enabled=False` (--quiet, or tests) makes every call a no-op."""

    def __init__(
        self,
        enabled: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = interval if interval is not None else interval_s()
        self.clock = clock
        self._lock = threading.Lock()
        self._live = False  # a redrawable line is on screen

    def _write(self, text: str, live: bool = False) -> None:
        with self._lock:
            prefix = "\r\x1b[K" if self._live else ""
            self.stream.write(prefix + text + ("" if live else "\n"))
            self.stream.flush()
            self._live = live

    def stage(self, name: str, seconds: float, detail: str = "") -> None:
        """One line for a finished stage: its name, what it did, how long it took."""
        if self.enabled:
            self._write(" · ".join(part for part in (f"{name} {detail}".strip(), duration(seconds)) if part))

    @contextmanager
    def counting(self, name: str, total: int, count: Callable[[], int]) -> Iterator[None]:
        """While the block runs, report `count()` of `total` from a background thread."""
        if not self.enabled or total <= 0:
            yield
            return
        done = threading.Event()
        start = self.clock()
        thread = threading.Thread(
            target=self._poll, args=(name, total, count, start, done), name="featurizer-progress", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)
            if self._live:  # the stage line that follows replaces the live one
                with self._lock:
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
                    self._live = False

    def _poll(self, name: str, total: int, count: Callable[[], int], start: float, done: threading.Event) -> None:
        last_print = start
        last_decile = 0
        shown = -1
        period = TTY_REFRESH_S if self.tty else min(1.0, self.interval)
        while not done.wait(period):
            n = 0
            with suppress(Exception):  # the session may be stopping: progress never fails a run
                n = min(int(count()), total)
            now = self.clock()
            if done.is_set():
                return
            line = count_line(name, n, total, now - start)
            if self.tty:
                self._write(line, live=True)
                continue
            decile = n * 10 // total
            if now - last_print >= self.interval or (decile > last_decile and n != shown):
                self._write(line)
                last_print, last_decile, shown = now, max(decile, last_decile), n


def stage_input_records(spark, group: str) -> int:
    """Records read by the finished tasks of the stages of the jobs in `group`."""
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    store = sc._jsc.sc().statusStore()
    total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job_id)
        for stage_id in info.stageIds if info else []:
            with suppress(Exception):  # not in the store yet
                total += int(store.lastStageAttempt(stage_id).inputRecords())
    return total
