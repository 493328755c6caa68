"""The benchmark harness still runs: `python -m contrib.bench --quick` measures all three targets,
the snapshot part (a small tree on maiffs, against cp -a), the zip part (maiffs's X.zip#
next to ratarmount and fuse-zip, which may be missing: their cells are then n/a with a reason)
the remotes part (push and clone to a directory and to a Ceph RADOS Gateway, next to rclone,
cp -a and boto3; without rclone or Ceph those cells are n/a with a reason), the follow part
(follower mounts of a writer replicating to each of those, about 30 s of the run), the tree
part (find and ls -lR), the randread part (fio; skipped with the reason without it) and the
memory part (the daemon's RSS while files are created).

Only that it works end to end is checked (a table, positive numbers, nothing left mounted), never
how fast anything is: timings on a shared CI machine are not something a test can assert.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("memfs", "plain", "maiffs")


def test_quick_bench_reports_all_targets(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run([sys.executable, "-m", "contrib.bench", "--quick", "--json", str(out),
                           "--workdir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    header = done.stdout.splitlines()[0]
    assert all(name in header for name in ("memfs (ceiling)", "plain dir", "maiffs", "maiffs/ceiling"))

    report = json.loads(out.read_text())
    assert report["problems"] == []
    keys = {w["key"] for w in report["workloads"]}
    assert {"write-random", "read-random-cold", "write-text", "small-create", "tree-find-cold",
            "tree-find-warm", "tree-ls-lR-cold", "tree-ls-lR-warm"} <= keys
    assert ({"randread", "randread-direct"} <= keys) != ("randread" in report["skipped"])  # fio or why not
    for workload in report["workloads"]:
        for target in TARGETS:
            result = workload["results"][target]
            assert result is not None and result["median"] > 0, (workload["key"], target)
        assert workload["maiffs_to_ceiling"] > 0 and workload["maiffs_to_plain"] > 0
    assert report["storage"], "no bytes-stored comparison"
    for item in report["storage"]:
        assert item["logical_bytes"] > 0 and item["tar_zstd3_bytes"] > 0 and item["maiffs_stored_bytes"] > 0
        assert item["goal_met"] is not None
    assert any("versions" in item["name"] for item in report["storage"])

    snapshots = report["snapshots"]
    assert snapshots is not None and snapshots["files"] > 0
    cases = {case["key"]: case for case in snapshots["cases"]}
    assert {"snap-build", "snap-cp-maiffs", "snap-cp-plain", "snap-first", "snap-0", "snap-10",
            "snap-rmdir", "snap-cli"} <= cases.keys()
    for key, case in cases.items():
        assert case["unit"] == "ms" and case["median"] > 0, key
    for key in ("snap-first", "snap-0", "snap-10", "snap-rmdir", "snap-cli"):
        assert cases[key]["to_cp_from_maiffs"] > 0 and cases[key]["to_cp_plain"] > 0, key
    assert cases["snap-0"]["target_met"] is not None and cases["snap-10"]["target_met"] is not None
    assert "snapshot after 0 changes" in done.stdout and "÷ cp -a" in done.stdout
    assert sum(line.startswith("§7 target, 100,000-file tree") for line in done.stdout.splitlines()) == 2

    zips = report["zips"]
    assert zips is not None and [a["key"] for a in zips["archives"]] == ["small", "large"]
    assert all(a["members"] > 0 and a["zip_bytes"] > 0 for a in zips["archives"])
    rows = {(row["archive"], row["key"]): row for row in zips["rows"]}
    cases = ("enter", "list-first", "list-again", "read-one", "read-all")
    assert set(rows) == {(archive, case) for archive in ("small", "large") for case in cases}
    for key, row in rows.items():
        maiffs = row["results"]["maiffs"]
        assert maiffs is not None and maiffs["median"] > 0, key
        for baseline in ("ratarmount", "fuse-zip"):  # measured, or n/a with the reason
            result = row["results"][baseline]
            assert (result is not None and result["median"] > 0) or row["not_available"].get(baseline), key
    zip_lines = [line for line in done.stdout.splitlines() if line.startswith(("small: ", "large: "))]
    assert len(zip_lines) == 10 and "maiffs÷ratarmount" in done.stdout and "maiffs÷fuse-zip" in done.stdout

    remotes = report["remotes"]
    assert remotes is not None and [d["key"] for d in remotes["datasets"]] == ["big", "small"]
    rows = {(row["destination"], row["dataset"], row["step"]): row for row in remotes["rows"]}
    assert set(rows) == {(dest, data, step) for dest in ("dir", "s3") for data in ("big", "small")
                         for step in ("push", "pull", "repush")}
    for key, row in rows.items():
        for subject, result in row["results"].items():
            if result is None:  # only rclone not installed, or S3 without Ceph: n/a with the reason
                assert row["not_available"].get(subject) and (subject == "rclone" or key[0] == "s3"), (key, subject)
            else:
                assert result["median"] > 0 and row["bytes"][subject] > 0, (key, subject)
    for data in ("big", "small"):  # the second push sends no more than the first
        assert 0 < rows[("dir", data, "repush")]["bytes"]["maiffs"] <= rows[("dir", data, "push")]["bytes"]["maiffs"]
    assert "directory remote (local disk)" in done.stdout and "S3 bucket" in done.stdout

    follow = report["follow"]
    assert follow is not None
    rows = {(row["destination"], row["key"]): row for row in follow["rows"]}
    assert {"writer-cold", "follower-cold", "follower-again", "prefetch-local", "switch-shown",
            "writer-data-again", "epoch-0.6-1", "epoch-1.25-2"} <= {key for _dest, key in rows}
    for (dest, key), row in rows.items():
        if row["result"] is None:  # only S3 without Ceph: n/a with the reason
            assert dest == "s3" and row["not_available"], key
        else:
            assert row["result"]["median"] > 0, (dest, key)
    assert rows[("dir", "follower-again")]["to_writer"] > 0
    assert "hit rate" in rows[("dir", "epoch-0.6-1")]["note"]
    assert "follower mounts: directory remote (local disk)" in done.stdout

    memory = report["memory"]
    assert memory is not None and memory["samples"] and memory["idle"]["rss_anon"] > 0
    assert memory["peak_rss_anon"] > 0 and memory["after_remount"] is not None
    assert memory["target_met"] is not None and "maiffs daemon memory" in done.stdout

    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("maiffs-bench-")]
    assert leftovers == [], "the harness left its work directory (and maybe a mount) behind"


def test_quick_randread_without_fio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without fio the randread part is skipped with the reason, printed and in the JSON."""
    from contrib.bench import cli

    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # main's SIGTERM handler
    out = tmp_path / "latest.json"
    assert cli.main(["--quick", "--only", "randread", "--fio", "no-such-fio", "--json", str(out),
                     "--workdir", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    assert "not found" in report["skipped"]["randread"] and report["workloads"] == []


def test_quick_remotes_without_ceph_or_rclone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the Ceph packages and rclone, their cells are n/a with the reason, and the rest runs."""
    from contrib import ceph_rgw
    from contrib.bench import cli

    monkeypatch.setattr(ceph_rgw, "missing_commands", lambda: ["ceph-mon"])
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # main's SIGTERM handler
    out = tmp_path / "latest.json"
    assert cli.main(["--quick", "--only", "remotes", "--rclone", "no-such-rclone", "--json", str(out),
                     "--workdir", str(tmp_path)]) == 0
    rows = json.loads(out.read_text())["remotes"]["rows"]
    for row in rows:
        expected = {"rclone", "maiffs", "boto3"} if row["destination"] == "s3" else {"rclone"}
        assert set(row["not_available"]) == expected, row
        assert all("not installed" in why for why in row["not_available"].values()), row
        assert row["destination"] == "s3" or row["results"]["maiffs"]["median"] > 0
