"""The benchmark harness still runs: `python -m contrib.bench --quick` measures all three targets,
the snapshot part (a small tree on maiffs, against cp -a) and the zip part (maiffs's X.zip#
next to ratarmount and fuse-zip, which may be missing: their cells are then n/a with a reason).

Only that it works end to end is checked (a table, positive numbers, nothing left mounted), never
how fast anything is: timings on a shared CI machine are not something a test can assert.
"""

import json
import subprocess
import sys
from pathlib import Path

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
    assert {"write-random", "read-random-cold", "write-text", "small-create", "find", "ls-lR"} <= keys
    for workload in report["workloads"]:
        for target in TARGETS:
            result = workload["results"][target]
            assert result is not None and result["median"] > 0, (workload["key"], target)
        assert workload["maiffs_to_ceiling"] > 0 and workload["maiffs_to_plain"] > 0
    assert report["storage"], "no bytes-stored comparison"
    for item in report["storage"]:
        assert item["logical_bytes"] > 0 and item["tar_zstd3_bytes"] > 0 and item["maiffs_stored_bytes"] > 0

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
    assert sum("§7 target" in line for line in done.stdout.splitlines()) == 2

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

    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("maiffs-bench-")]
    assert leftovers == [], "the harness left its work directory (and maybe a mount) behind"
