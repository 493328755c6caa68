"""systemd's readiness protocol (sd_notify) without a dependency: one datagram to the socket
named by $NOTIFY_SOCKET, so a Type=notify unit running `maiffs mount -f` is "started" only once
the mount is up, and knows when it begins to stop. Outside systemd it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)
ENV = "NOTIFY_SOCKET"


def notify(state: str) -> None:
    """Send state lines (e.g. 'READY=1') to the service manager, if there is one; a failure
    is logged, never raised: the mount works without it."""
    address = os.environ.get(ENV)
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)


def mounted(error: str | None) -> None:
    """The ready callback of a foreground mount: READY=1 once mounted (a failure is told by
    the exit status)."""
    if error is None:
        notify("READY=1\nSTATUS=mounted")


def forget() -> None:
    """Keep children (the forked daemon) from speaking for this process to systemd."""
    os.environ.pop(ENV, None)
