"""A throwaway Ceph RADOS Gateway on 127.0.0.1: 1 mon, 1 memstore OSD, 1 radosgw, all state in one
short temp directory, stopped by PID whatever happens (facts from ../shared/ceph-rgw-notes.md).
Needs the Debian packages ceph-mon, ceph-osd, radosgw, ceph-common.

It lives in contrib/ because two users start it: the S3 tests (through tests/rgw.py) and the
benchmark's remotes part (contrib/bench/remotes.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "maiffstestaccess"
SECRET_KEY = "maiffstestsecret0123456789"
#: The commands start() runs; without any of them there is no gateway.
COMMANDS = ("monmaptool", "ceph-mon", "ceph-osd", "ceph", "radosgw", "radosgw-admin")
#: What the OSD may hold by default. memstore keeps everything in RAM, and a full one makes
#: S3 writes hang rather than fail, so a user that writes more asks for more.
MEMSTORE_BYTES = 2 << 30

CONF = """[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms bind msgr1 = false
ms bind ipv6 = false
paxos propose interval = 0.05
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = {base}/run
admin socket = {base}/run/$name.asok
log file = {base}/log/$name.log
mon data = {base}/mon/$name
osd data = {base}/osd/$name
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
rgw enable lc threads = false
rgw gc obj min wait = 30
rgw gc processor period = 30
"""


def missing_commands() -> list[str]:
    """The Ceph commands not on PATH (the packages are not installed if any is missing)."""
    return [c for c in COMMANDS if shutil.which(c) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    """A running gateway: its S3 endpoint, and the daemons to stop."""

    base: Path
    endpoint: str = ""
    pids: list[int] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run([*args, "-c", str(self.base / "ceph.conf")], capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {done.stderr[-2000:]}")
        return done.stdout

    def daemon(self, *args: str) -> None:
        proc = subprocess.Popen([*args, "-c", str(self.base / "ceph.conf"), "-f"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.pids.append(proc.pid)

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def collect_garbage(self) -> None:
        """Free now what deleted objects still hold in memstore (gc would wait 30 s or more),
        so that a user deleting as it goes needs room for one round of writes, not all."""
        self.run("radosgw-admin", "gc", "process", "--include-all", timeout=300)


def _until(deadline: float, what: str, attempt: Callable[[], object]) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            attempt()
            return
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"{what}: {last}")


def start(memstore_bytes: int = MEMSTORE_BYTES) -> Gateway:
    """Start mon, osd and radosgw; return once S3 answers (raises, having stopped all, if not).
    The OSD holds at most memstore_bytes, in RAM."""
    base = Path(tempfile.mkdtemp(prefix="rgw.", dir="/tmp"))  # admin sockets: 107 chars at most
    gw = Gateway(base)
    try:
        for sub in ("run", "log", "mon/mon.a", "osd/osd.0"):
            (base / sub).mkdir(parents=True)
        mon_port, rgw_port = _free_port(), _free_port()
        fsid = str(uuid.uuid4())
        (base / "ceph.conf").write_text(CONF.format(fsid=fsid, mon_port=mon_port, base=base,
                                                     memstore_bytes=memstore_bytes))
        subprocess.run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                        f"[v2:127.0.0.1:{mon_port}]", str(base / "monmap")],
                       check=True, capture_output=True)
        gw.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(base / "monmap"))
        gw.daemon("ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        osd_id = gw.run("ceph", "osd", "new", osd_uuid).strip()
        gw.run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        gw.daemon("ceph-osd", "-i", osd_id)
        # tcp_nodelay: without it every GET of an object under ~64 KiB takes 44 ms instead of
        # 1.5 ms (Nagle's algorithm holds the body behind the headers until the client's
        # delayed ACK), which would make any per-object client look 30 times slower.
        gw.daemon("radosgw", "-n", "client.rgw.a", "--rgw-frontends",
                  f"beast endpoint=127.0.0.1:{rgw_port} tcp_nodelay=1")
        gw.endpoint = f"http://127.0.0.1:{rgw_port}"
        deadline = time.monotonic() + 120
        _until(deadline, "radosgw-admin user create",
               lambda: gw.run("radosgw-admin", "user", "create", "--uid=test",
                              "--display-name=test", f"--access-key={ACCESS_KEY}",
                              f"--secret-key={SECRET_KEY}", timeout=30))
        _until(deadline, "radosgw's port", lambda: socket.create_connection(
            ("127.0.0.1", rgw_port), timeout=1).close())
        return gw
    except BaseException:
        gw.stop()
        raise
