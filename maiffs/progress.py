"""Progress of a long operation (push, pull, clone, verify, fsck, prefetch) on stderr: a bar
redrawn in place on a terminal, a plain line every few seconds otherwise (logs of cron jobs and
CI stay readable), nothing with --quiet.

Thread-safe: uploads report from a thread of their own.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

BAR = 24
REDRAW = 0.1  # seconds between redraws on a terminal
LINE_EVERY = 5.0  # seconds between plain lines elsewhere


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n /= 1024
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02}:{seconds % 60:02}"


class Progress(Protocol):
    """Told how much there is to do, then how much is done (bytes, and items: objects, chunks,
    files); what long operations take, so that they need not know how it is shown."""

    def start(self, total_bytes: int, total_items: int) -> None: ...

    def advance(self, nbytes: int, items: int) -> None: ...


class ProgressBar:
    """Bytes and items (objects, chunks, files) done of a known total, with rate and ETA."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, quiet: bool = False,
                 items: str = "objects") -> None:
        self.label = label
        self.items = items
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.total_bytes = self.total_items = self.done_bytes = self.done_items = 0
        self.started = self.shown = time.monotonic()
        self.begun = False  # nothing is shown before start: there is nothing to show yet

    def start(self, total_bytes: int, total_items: int) -> None:
        with self.lock:
            self.begun = True
            self.total_bytes, self.total_items = total_bytes, total_items
            self.started = time.monotonic()
            self._show(force=True)

    def advance(self, nbytes: int, items: int) -> None:
        with self.lock:
            self.done_bytes += nbytes
            self.done_items += items
            self._show()

    def finish(self) -> None:
        with self.lock:
            if not self.begun:
                return
            self._show(force=True)
            if self.tty and not self.quiet:
                self.stream.write("\n")
                self.stream.flush()

    def line(self) -> str:
        """The state as one line (what the bar shows)."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        # by bytes where there are any to go by (items differ in size), else by items
        done, total = ((self.done_bytes, self.total_bytes) if self.total_bytes
                       else (self.done_items, self.total_items))
        share = min(done / total, 1.0) if total else 1.0
        if total <= done:
            eta = _duration(0)
        else:  # at the rate so far; unknown before anything is done
            eta = _duration((total - done) * elapsed / done) if done else "-:--:--"
        filled = int(share * BAR)
        sizes = (f"{human_size(self.done_bytes)}/{human_size(self.total_bytes)} "
                 if self.total_bytes else "")
        speed = (f"{human_size(self.done_bytes / elapsed)}/s" if self.total_bytes
                 else f"{self.done_items / elapsed:,.0f} {self.items}/s")
        return (f"{self.label} [{'#' * filled}{'.' * (BAR - filled)}] {share:4.0%} {sizes}"
                f"{self.done_items:,}/{self.total_items:,} {self.items} {speed} "
                f"ETA {eta}")

    def _show(self, force: bool = False) -> None:
        if self.quiet or not self.begun:
            return
        now = time.monotonic()
        if not force and now - self.shown < (REDRAW if self.tty else LINE_EVERY):
            return
        self.shown = now
        self.stream.write(f"\r{self.line()}\x1b[K" if self.tty else f"{self.line()}\n")
        self.stream.flush()


@contextmanager
def progress_bar(label: str, quiet: bool, items: str = "objects") -> Iterator[ProgressBar]:
    """A bar for one step of a command, finished (its line ended) however the step ends."""
    bar = ProgressBar(label, quiet=quiet, items=items)
    try:
        yield bar
    finally:
        bar.finish()
