"""Where a mount's log lines go (the store's maiffs.log, a file, syslog or stderr), at which
level, and in one format: one line per event with its time and level, so `grep` and log
shippers see whole events. Nothing is logged at the default level in a normal mount's life
but its start and end; --debug (or -o debug) adds a line per FUSE request.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import signal
import socket
import sys
from datetime import datetime
from typing import TextIO

from maiffs.errors import StoreError

LOG_NAME = "maiffs.log"
SYSLOG = "syslog"
SYSLOG_SOCKET = "/dev/log"
#: their debug lines carry request headers: remote credentials must never reach a log
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3")


class OneLineFormatter(logging.Formatter):
    """Every record on one line: the lines of a traceback or a message joined by ' | '."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(filter(None, super().format(record).splitlines()))


def describe(target: str, store: str, foreground: bool) -> str:
    """Where -o log=TARGET sends a mount's lines, in words for messages ('stderr' in the
    foreground unless a target is given; the store's maiffs.log otherwise)."""
    if not target:
        return "stderr" if foreground else os.path.join(os.path.abspath(store), LOG_NAME)
    return target if target.startswith(SYSLOG) else os.path.abspath(target)


def _check_listening(address: str) -> None:
    """Refuse a syslog socket nobody listens on (the handler itself would drop every line)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(address)
                return
            except OSError as exc:
                reason = exc.strerror
    raise StoreError(f"cannot log to syslog at {address} ({reason}); is a syslog daemon "
                     f"running? -o log=FILE logs to a file instead")


def _handler(target: str, store: str, foreground: bool) -> logging.Handler:
    """The handler for -o log=TARGET; opening it here, before the daemon forks, makes a bad
    target fail the mount command itself."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if not target and foreground:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    elif target.startswith(SYSLOG):
        address = target.partition(":")[2] or SYSLOG_SOCKET
        _check_listening(address)
        handler = logging.handlers.SysLogHandler(address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        fmt = "maiffs[%(process)d]: %(levelname)s %(name)s: %(message)s"  # syslog adds the time
    else:
        path = describe(target, store, foreground)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # private, whatever the umask
            handler = logging.FileHandler(path)
        except OSError as exc:
            raise StoreError(f"cannot write the log file {path} ({exc.strerror}); "
                             f"choose another with -o log=FILE") from None
    handler.setFormatter(OneLineFormatter(fmt))
    return handler


def setup(target: str, store: str, foreground: bool, debug: bool) -> None:
    """Send this process's log records to -o log=TARGET: INFO and above, or with debug all."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    handler = _handler(target, store, foreground)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    dump_stacks_on_sigusr1(getattr(handler, "stream", None) or sys.stderr)
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.WARNING)


def dump_stacks_on_sigusr1(stream: TextIO) -> None:
    """`kill -USR1 PID` writes where every thread of this process is (its Python stacks) to
    stream and lets it go on: the way to see where a mount that stopped answering is stuck.
    faulthandler writes from the signal handler itself, so it works even when every thread
    is blocked. (The one multi-line entry a log file can get.)"""
    faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)
