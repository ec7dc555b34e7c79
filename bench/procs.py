"""Peak memory of a process tree (driver python, its JVM, the Python workers), from /proc.

Forked PySpark workers share pages with their daemon, so the workers' total uses PSS
(proportional set size), which does not count shared pages twice; single processes use RSS.
PSS is costly to read: the kernel walks the page tables, ~7 ms of CPU per 500 MiB worker. Read
every 0.25 s for four workers it took ~9 % of a core from the job being measured, so PSS is read
every `pss_every` samples only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _field_kib(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class TreePeaks:
    """Peak MiB per role over the sampling period."""

    driver_python_mib: float = 0.0
    jvm_mib: float = 0.0
    worker_max_mib: float = 0.0
    workers_total_pss_mib: float = 0.0
    workers_max_count: int = 0
    samples: int = 0


@dataclass
class TreeSampler:
    """Polls the tree under `root` every `interval` seconds in a background thread."""

    root: int
    interval: float = 0.25
    pss_every: int = 8  # samples; RSS is read at every sample
    peaks: TreePeaks = field(default_factory=TreePeaks)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling (the peaks so far stay); the measured work then runs undisturbed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        parents = _parents()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        workers: list[int] = []
        jvms: list[int] = []
        stack = [(self.root, False)]
        while stack:
            pid, under_jvm = stack.pop()
            comm = _comm(pid)
            if comm == "java":
                jvms.append(pid)
            elif under_jvm and comm.startswith("python"):
                workers.append(pid)
            stack.extend((child, under_jvm or comm == "java") for child in children.get(pid, []))
        p = self.peaks
        read_pss = p.samples % self.pss_every == 0
        p.samples += 1
        p.driver_python_mib = max(p.driver_python_mib, _field_kib(PROC / str(self.root) / "status", "VmRSS") / 1024)
        p.jvm_mib = max([p.jvm_mib] + [_field_kib(PROC / str(j) / "status", "VmRSS") / 1024 for j in jvms])
        rss = [_field_kib(PROC / str(w) / "status", "VmRSS") / 1024 for w in workers]
        p.worker_max_mib = max([p.worker_max_mib, *rss])
        if read_pss:
            pss = sum(_field_kib(PROC / str(w) / "smaps_rollup", "Pss") for w in workers) / 1024
            p.workers_total_pss_mib = max(p.workers_total_pss_mib, pss)
        p.workers_max_count = max(p.workers_max_count, len(workers))
