"""Terminal widgets of the CLI: a live status line and upload progress (stderr; a TTY gets in-place updates)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TextIO


class StatusLine:
    """One live line on a terminal (rewritten in place); on a pipe, a line per state change."""

    def __init__(self, stream: TextIO, step_id: str) -> None:
        self._stream, self._step, self._last = stream, step_id, ""
        self._tty = stream.isatty()

    def update(self, status: Any, elapsed: float) -> None:
        from launcher.wait import format_duration

        text = f"{self._step} {status.state:<10} {format_duration(elapsed):>9}"
        if self._tty:
            self._stream.write(f"\r{text}\x1b[K")
            self._stream.flush()
        elif status.state != self._last:
            self._stream.write(text + "\n")
        self._last = status.state

    def note(self, message: str) -> None:
        self._stream.write(("\n" if self._tty else "") + message + "\n")

    def close(self) -> None:
        if self._tty and self._last:
            self._stream.write("\n")


def upload_progress(stream: TextIO) -> Callable[[str, int], Callable[[int], None]]:
    """Progress for large uploads: a live percentage on a terminal, quarter steps on a pipe."""

    def start(name: str, total: int) -> Callable[[int], None]:
        lock, sent, shown = threading.Lock(), [0], [-1]
        tty = stream.isatty()

        def on_bytes(count: int) -> None:
            with lock:  # s3transfer reports from its worker threads
                sent[0] += count
                percent = 100 * sent[0] // max(total, 1)
                step = percent if tty else percent // 25 * 25
                if step == shown[0]:
                    return
                shown[0] = step
                text = f"uploading {name} {size_text(sent[0])}/{size_text(total)} {percent}%"
                stream.write(f"\r{text}\x1b[K" + ("\n" if percent >= 100 else "") if tty else text + "\n")
                stream.flush()

        return on_bytes

    return start


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
