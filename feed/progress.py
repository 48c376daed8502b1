"""A progress line for the command line's long runs (``feed publish``, ``feed backfill``)."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar on a terminal (plain periodic lines otherwise)."""

    def __init__(self, label: str, total: int | None, stream: TextIO, *, quiet: bool) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.quiet = quiet
        self.started = time.monotonic()
        self.last = 0.0
        self.tty = stream.isatty()

    def update(self, done: int, bad: int = 0, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self.last < (0.1 if self.tty else 2.0)):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        if self.total:
            width = 30
            filled = int(width * min(done, self.total) / self.total)
            bar = "#" * filled + "-" * (width - filled)
            text = f"{self.label} [{bar}] {done}/{self.total}"
        else:
            text = f"{self.label} {done}"
        text += f"  {rate:,.0f}/s"
        if bad:
            text += f"  bad: {bad}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
