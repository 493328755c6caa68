"""Every tutorial in docs/tutorials/ runs as written, so what it tells users stays true.

A tutorial's ```sh blocks, joined in order, are one bash script (`bash -euo pipefail`) run in
a fresh empty directory with the repository's virtualenv first on PATH. The script checks its
own claims; this test checks that it succeeds and that it left nothing mounted or running,
and clears whatever it did leave (a failed or timed-out script included).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((REPO / "docs" / "tutorials").glob("[0-9][0-9]-*.md"))
TIMEOUT = 180  # seconds per tutorial; each is meant to take well under 30
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def script_of(tutorial: Path) -> str:
    """The tutorial's ```sh blocks in order, as one script (other languages are not run)."""
    return "\n".join(SH_BLOCK.findall(tutorial.read_text()))


def venv_bin() -> Path:
    """The checkout's .venv/bin; in a git worktree without one, the venv running the tests."""
    own = REPO / ".venv" / "bin"
    return own if (own / "maiffs").exists() else Path(sys.executable).parent


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, deepest first (so inner ones are unmounted first)."""
    with open("/proc/mounts") as f:
        points = [_unescape(line.split()[1]) for line in f]
    inside = [p for p in points if p == str(root) or p.startswith(f"{root}/")]
    return sorted(set(inside), key=len, reverse=True)


def processes_in(root: Path) -> list[int]:
    """Processes (mount daemons, background writers) whose working directory is under root."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == str(root) or cwd.startswith(f"{root}/"):
            found.append(int(entry))
    return found


def still_running(root: Path, grace: float = 10.0) -> list[int]:
    """Processes under root that have not ended within grace seconds (a daemon whose unmount
    returned may take a moment to exit after releasing its store)."""
    deadline = time.monotonic() + grace
    while (pids := processes_in(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def clear(root: Path) -> None:
    """Unmount everything under root (lazily: a dead daemon's mount too) and kill what is left."""
    for point in mounts_under(root):
        subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)
    for pid in processes_in(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    still_running(root)  # until the killed are gone, so the temp directory can be removed


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=[t.stem for t in TUTORIALS])
def test_tutorial_runs_as_written(tutorial: Path, tmp_path: Path) -> None:
    script = script_of(tutorial)
    assert script.strip(), f"{tutorial.name} has no ```sh blocks"
    work = tmp_path / "tutorial"
    work.mkdir()
    env = dict(os.environ, PATH=f"{venv_bin()}{os.pathsep}{os.environ['PATH']}",
               TUTORIAL_TMP=str(work))
    # Output goes to files: a pipe would stay open as long as any background child of the
    # script lives, and the wait is for bash alone.
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                                stdout=out, stderr=err, start_new_session=True)
    try:
        proc.wait(timeout=TIMEOUT)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        timed_out = True
    finally:
        left_mounted = mounts_under(work)
        left_running = [] if left_mounted else still_running(work)
        clear(work)
    out, err = out_file.read_text(errors="replace"), err_file.read_text(errors="replace")
    report = f"--- stdout (tail)\n{tail(out)}\n--- stderr (tail)\n{tail(err)}"
    assert not timed_out, f"{tutorial.name} ran longer than {TIMEOUT} s\n{report}"
    assert proc.returncode == 0, f"{tutorial.name} failed (exit {proc.returncode})\n{report}"
    assert not left_mounted, f"{tutorial.name} left mounted: {left_mounted}\n{report}"
    assert not left_running, f"{tutorial.name} left processes running: {left_running}\n{report}"
