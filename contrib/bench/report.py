"""Turning results into the printed tables and the JSON file.

Ratios are maiffs divided by a baseline measured in the same run, which is what design.md §7
states its targets in: for rates (MiB/s, files/s) higher is better and §7 gives a lower bound
on maiffs/ceiling; for times (find, ls -lR) lower is better and §7 gives an upper bound.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from contrib.bench.follow import FollowResults
from contrib.bench.measure import Summary
from contrib.bench.memory import POINTS, MemoryResults, RssSample
from contrib.bench.remotes import DESTINATIONS, PUSH, REPUSH, STEPS, Destination, RemoteResults, Step
from contrib.bench.snapshots import CP_MAIFFS, CP_PLAIN, ORDER, TARGET_FILES, Case, SnapshotResults
from contrib.bench.storage import StorageItem
from contrib.bench.workloads import MIB, Results, Workload
from contrib.bench.zips import CASES as ZIP_CASES
from contrib.bench.zips import SUBJECTS as ZIP_SUBJECTS
from contrib.bench.zips import ZipResults

TARGETS = ("memfs", "plain", "maiffs")


def _ratio(a: Summary | None, b: Summary | None) -> float | None:
    return a.median / b.median if a and b and b.median else None


def goal_met(workload: Workload, ratio: float | None) -> bool | None:
    if workload.goal is None or ratio is None:
        return None
    return ratio >= workload.goal if workload.kind == "rate" else ratio <= workload.goal


def _number(value: float, kind: str) -> str:
    if kind == "time":
        return f"{value:.3f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _cell(summary: Summary | None, workload: Workload) -> str:
    """Median ±half the range in % (of several samples); times also show entries listed per
    second; a * marks a cell with a sample during which another program dropped the caches."""
    if summary is None:
        return "n/a"
    text = _number(summary.median, workload.kind)
    if len(summary.samples) > 1:
        text += f" ±{summary.spread_pct / 2:.0f}%"
    if workload.kind == "time":
        amount = summary.samples[0]["amount"] or 0
        text += f" ({amount / summary.median / 1000:,.0f}k/s)"
    return text + "*" * bool(summary.disturbed)


def _optional(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _goal_cell(workload: Workload, ratio: float | None) -> str:
    if workload.goal is None:
        return "-"
    bound = f"≥{workload.goal:.2f}" if workload.kind == "rate" else f"≤{workload.goal:.1f}"
    met = goal_met(workload, ratio)
    return f"{bound} {'ok' if met else 'MISS' if met is False else ''}".strip()


def _render(header: list[str], rows: list[list[str]], right_from: int) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= right_from else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


def timing_table(results: Results) -> str:
    header = ["workload", "unit", "memfs (ceiling)", "plain dir", "maiffs", "maiffs/ceiling",
              "maiffs/plain", "§7 goal", "CPU memfs", "CPU maiffs"]
    rows = []
    for key, workload in results.workloads.items():
        memfs, plain, maiffs = (results.summary(key, t) for t in TARGETS)
        to_ceiling = _ratio(maiffs, memfs)
        rows.append([workload.label, workload.unit, _cell(memfs, workload), _cell(plain, workload),
                     _cell(maiffs, workload), _optional(to_ceiling, ".2f"),
                     _optional(_ratio(maiffs, plain), ".2f"), _goal_cell(workload, to_ceiling),
                     _optional(memfs.daemon_cores if memfs else None, ".2f"),
                     _optional(maiffs.daemon_cores if maiffs else None, ".2f")])
    table = _render(header, rows, right_from=2)
    if any("*" in cell for row in rows for cell in row[2:5]):
        table += ("\n* another program dropped the page cache during a sample (a disturbance; "
                  "a warm read may have been partly cold)")
    return table


def _bytes(n: int) -> str:
    return f"{n / MIB:,.1f} MiB" if n >= MIB else f"{n / 1024:,.1f} KiB"


def _size(n: int, logical: int) -> str:
    """Bytes, and their ratio to the logical size."""
    return f"{_bytes(n)} ({n / logical:.3f})" if logical else _bytes(n)


def storage_table(items: list[StorageItem]) -> str:
    header = ["data", "files", "logical", "plain dir (du)", "tar -c | zstd -3", "maiffs stored",
              "maiffs LMDB file growth", "maiffs/tar+zstd", "goal"]
    rows = [[item.name, str(item.files), _bytes(item.logical_bytes),
             _size(item.plain_allocated_bytes, item.logical_bytes),
             _size(item.tar_zstd3_bytes, item.logical_bytes),
             _size(item.maiffs_stored_bytes, item.logical_bytes),
             _size(item.maiffs_store_file_growth_bytes, item.logical_bytes),
             _optional(item.to_tar_zstd, ".2f"),
             f"≤{item.goal:.2f} {'ok' if item.goal_met else 'MISS' if item.goal_met is False else ''}".strip()]
            for item in items]
    return _render(header, rows, right_from=1)


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _snapshot_cases(snap: SnapshotResults) -> list[tuple[Case, Summary]]:
    return [(case, summary) for case in ORDER if (summary := snap.summary(case.key)) is not None]


def _to_cp(snap: SnapshotResults, case: Case, summary: Summary) -> tuple[float | None, float | None]:
    """The case's median as a fraction of cp -a's (from maiffs, from a plain dir)."""
    if not case.vs_cp:
        return None, None
    return _ratio(summary, snap.summary(CP_MAIFFS.key)), _ratio(summary, snap.summary(CP_PLAIN.key))


def _target_met(case: Case, summary: Summary) -> bool | None:
    return None if case.target_ms is None else summary.median * 1000 <= case.target_ms


def _cores(summary: Summary | None) -> float | None:
    """The daemon's cores over the samples, if they last long enough to tell: /proc counts CPU
    time in 10 ms ticks, too coarse for a few ms in all."""
    if summary is None or sum(s["seconds"] or 0 for s in summary.samples) < 0.2:
        return None
    return summary.daemon_cores


def snapshot_table(snap: SnapshotResults) -> str:
    """One row per case: median ms ±half the range, as a fraction of cp -a's time, §7's bound if
    any, and the daemon's CPU (cores) where the samples last long enough to measure it."""
    header = [f"snapshots, {snap.files:,} × {snap.file_size} B files ({snap.files_per_dir}/dir)",
              "unit", "maiffs", "÷ cp -a maiffs→plain", "÷ cp -a plain→plain", "§7 goal", "CPU maiffs"]
    rows = []
    for case, summary in _snapshot_cases(snap):
        cell = _ms(summary.median)
        if len(summary.samples) > 1:
            cell += f" ±{summary.spread_pct / 2:.0f}%"
        cell += "*" * bool(summary.disturbed)
        to_maiffs, to_plain = _to_cp(snap, case, summary)
        met = _target_met(case, summary)
        goal = "-" if met is None else f"≤{case.target_ms:g} ms {'ok' if met else 'MISS'}"
        rows.append([case.label, "ms", cell, _optional(to_maiffs, ".2g"), _optional(to_plain, ".2g"),
                     goal, _optional(_cores(summary), ".2f")])
    table = _render(header, rows, right_from=2)
    if any(row[2].endswith("*") for row in rows):
        table += "\n* another program dropped the page cache during a sample (a disturbance)"
    return table


def snapshot_targets(snap: SnapshotResults) -> list[str]:
    """A line per §7 / issue 3 target: the bound, the median, ok or MISS."""
    lines = []
    for case, summary in _snapshot_cases(snap):
        met = _target_met(case, summary)
        if met is None:
            continue
        size = "" if snap.files == TARGET_FILES else f" (this tree: {snap.files:,} files)"
        lines.append(f"§7 target, {TARGET_FILES:,}-file tree: {case.label} ≤ {case.target_ms:g} ms: "
                     f"median {summary.median * 1000:.2f} ms{size}: {'ok' if met else 'MISS'}")
    return lines


def snapshots_json(snap: SnapshotResults) -> dict[str, Any]:
    cases = []
    for case, summary in _snapshot_cases(snap):
        to_maiffs, to_plain = _to_cp(snap, case, summary)
        cases.append({
            "key": case.key, "label": case.label, "unit": "ms", "target_ms": case.target_ms,
            "median": summary.median * 1000, "low": summary.low * 1000, "high": summary.high * 1000,
            "spread_pct": summary.spread_pct, "daemon_cores": summary.daemon_cores,
            "disturbed": summary.disturbed, "samples": summary.samples,
            "to_cp_from_maiffs": to_maiffs, "to_cp_plain": to_plain,
            "target_met": _target_met(case, summary),
        })
    return {"files": snap.files, "files_per_dir": snap.files_per_dir, "file_size": snap.file_size,
            "cases": cases}


def _zip_cell(zips: ZipResults, archive: str, case: str, subject: str) -> str:
    """Median seconds ±half the range in %, * if disturbed; n/a when there is no number."""
    summary = zips.summary(archive, case, subject)
    if summary is None:
        return "n/a"
    text = _number(summary.median, "time")
    if len(summary.samples) > 1:
        text += f" ±{summary.spread_pct / 2:.0f}%"
    return text + "*" * bool(summary.disturbed)


def _zip_ratios(zips: ZipResults, archive: str, case: str) -> dict[str, float | None]:
    maiffs = zips.summary(archive, case, "maiffs")
    return {other: _ratio(maiffs, zips.summary(archive, case, other)) for other in ZIP_SUBJECTS[1:]}


def zip_table(zips: ZipResults) -> str:
    """One row per archive and case: cold seconds of the three, maiffs ÷ each baseline (below
    1: maiffs is faster), and the cores each one's process used; then what the rows ran on."""
    header = ["zip archives, cold", "unit", "maiffs X.zip#", "ratarmount", "fuse-zip",
              "maiffs÷ratarmount", "maiffs÷fuse-zip", "CPU maiffs", "CPU ratarmount", "CPU fuse-zip"]
    rows = []
    for archive in zips.archives:
        for case in ZIP_CASES:
            ratios = _zip_ratios(zips, archive.key, case.key)
            summaries = [zips.summary(archive.key, case.key, s) for s in ZIP_SUBJECTS]
            rows.append([f"{archive.key}: {case.label}", "s",
                         *(_zip_cell(zips, archive.key, case.key, s) for s in ZIP_SUBJECTS),
                         *(_optional(ratios[s], ".2f") for s in ZIP_SUBJECTS[1:]),
                         *(_optional(x.daemon_cores if x else None, ".2f") for x in summaries)])
    lines = [_render(header, rows, right_from=2)]
    if any(row[i].endswith("*") for row in rows for i in (2, 3, 4)):
        lines.append("* another program dropped the page cache during a sample (a disturbance)")
    for archive in zips.archives:
        lines.append(f"{archive.key} zip: {archive.description}; {_bytes(archive.logical_bytes)} in a "
                     f"{_bytes(archive.zip_bytes)} zip (made in {archive.make_seconds:.1f} s, "
                     f"copied into maiffs in {archive.copy_seconds:.1f} s)")
    for tool, what in zips.tools.items():
        lines.append(f"{tool}: {what}")
    for archive, where in zips.ratarmount_index.items():
        lines.append(f"ratarmount index of the {archive} zip: {where}")
    for archive in zips.archives:
        for subject, reason in zips.unavailable.get(archive.key, {}).items():
            lines.append(f"{subject}, {archive.key} zip: {reason}")
    lines.extend(f"NOTE: {note}" for note in zips.notes)
    return "\n".join(lines)


def zips_json(zips: ZipResults) -> dict[str, Any]:
    rows = []
    for archive in zips.archives:
        for case in ZIP_CASES:
            summaries = {s: zips.summary(archive.key, case.key, s) for s in ZIP_SUBJECTS}
            ratios = _zip_ratios(zips, archive.key, case.key)
            rows.append({
                "archive": archive.key, "key": case.key, "label": case.label, "unit": "s",
                "results": {s: asdict(x) if x else None for s, x in summaries.items()},
                "not_available": {s: zips.reason(archive.key, case.key, s) for s in ZIP_SUBJECTS
                                  if zips.reason(archive.key, case.key, s)},
                "maiffs_to_ratarmount": ratios["ratarmount"],
                "maiffs_to_fuse_zip": ratios["fuse-zip"],
            })
    return {
        "archives": [{"key": a.key, "description": a.description, "members": len(a.expected),
                      "middle_member": a.middle, "zip_bytes": a.zip_bytes,
                      "logical_bytes": a.logical_bytes, "make_seconds": a.make_seconds,
                      "copy_into_maiffs_seconds": a.copy_seconds} for a in zips.archives],
        "tools": zips.tools, "ratarmount_index": zips.ratarmount_index, "rows": rows,
        "notes": zips.notes,
    }


def _remote_cell(remotes: RemoteResults, dest: Destination, data: str, step: Step, subject: str) -> str:
    """Median seconds ±half the range in %, and for a whole push or pull the median MiB/s of
    the dataset; * if disturbed; n/a when there is no number."""
    summary = remotes.summary(dest.key, data, step.key, subject)
    if summary is None:
        return "n/a"
    text = f"{_number(summary.median, 'time')} s"
    if len(summary.samples) > 1:
        text += f" ±{summary.spread_pct / 2:.0f}%"
    if step is not REPUSH:
        rate = remotes.summary(dest.key, data, step.key, subject, "rate")
        text += f" ({_number(rate.median, 'rate')} MiB/s)" if rate else ""
    return text + "*" * bool(summary.disturbed)


def _moved_cell(remotes: RemoteResults, dest: Destination, data: str, step: Step, subject: str) -> str:
    """Bytes sent (pull: received); after the change also as a share of the first push's."""
    moved = remotes.bytes_moved(dest.key, data, step.key, subject)
    if moved is None:
        return "-"
    first = remotes.bytes_moved(dest.key, data, PUSH.key, subject)
    share = f" ({moved / first * 100:.1f}% of the 1st)" if step is REPUSH and first else ""
    return _bytes(moved) + share


def _remote_ratios(remotes: RemoteResults, dest: Destination, data: str, step: Step) -> list[float | None]:
    """maiffs's median time ÷ each baseline's (rclone, then the plain copy)."""
    maiffs = remotes.summary(dest.key, data, step.key, "maiffs")
    return [_ratio(maiffs, remotes.summary(dest.key, data, step.key, other)) for other in dest.subjects[1:]]


def remote_tables(remotes: RemoteResults) -> str:
    """A table per destination, a row per dataset and step: each subject's time and MiB/s,
    maiffs ÷ each baseline (below 1: maiffs is faster), the bytes each moved, maiffs's CPU;
    then the data, the setup, the tools and why a cell is n/a."""
    blocks, disturbed = [], False
    for dest in DESTINATIONS:
        others = dest.subjects[1:]
        header = [dest.label, *dest.subjects, *(f"maiffs÷{s}" for s in others),
                  *(f"bytes {s}" for s in dest.subjects), "CPU maiffs"]
        rows = []
        for data in remotes.datasets:
            for step in STEPS:
                maiffs = remotes.summary(dest.key, data.key, step.key, "maiffs")
                rows.append([f"{data.label}: {step.label}",
                             *(_remote_cell(remotes, dest, data.key, step, s) for s in dest.subjects),
                             *(_optional(r, ".2f") for r in _remote_ratios(remotes, dest, data.key, step)),
                             *(_moved_cell(remotes, dest, data.key, step, s) for s in dest.subjects),
                             _optional(maiffs.daemon_cores if maiffs else None, ".2f")])
            disturbed = disturbed or any(cell.endswith("*") for row in rows for cell in row)
        blocks.append(_render(header, rows, right_from=1))
    lines = ["\n\n".join(blocks),
             "s: median seconds ± half the range (MiB/s of the dataset); ÷: maiffs's time over the "
             "other's; bytes: sent (pull: received); CPU maiffs: cores of the maiffs command"]
    if disturbed:
        lines.append("* another program dropped the page cache during a sample (a disturbance)")
    lines.extend(data.describe() for data in remotes.datasets)
    lines.extend(remotes.setup)
    lines.extend(f"{tool}: {what}" for tool, what in remotes.tools.items())
    for dest in DESTINATIONS:
        lines.extend(f"{dest.label}: {subject}: {why}"
                     for subject, why in remotes.unavailable.get(dest.key, {}).items())
        lines.extend(f"{dest.label}: {subject}, {data}: {why}"
                     for data, by in remotes.failed.get(dest.key, {}).items() for subject, why in by.items())
    lines.extend(f"NOTE: {note}" for note in remotes.notes)
    return "\n".join(lines)


def remotes_json(remotes: RemoteResults) -> dict[str, Any]:
    rows = []
    for dest in DESTINATIONS:
        for data in remotes.datasets:
            for step in STEPS:
                rates = {s: remotes.summary(dest.key, data.key, step.key, s, "rate") for s in dest.subjects}
                ratios = _remote_ratios(remotes, dest, data.key, step)
                rows.append({
                    "destination": dest.key, "dataset": data.key, "step": step.key,
                    "label": f"{dest.label}: {data.label}: {step.label}", "unit": "s",
                    "baseline": dest.baseline,
                    "results": {s: asdict(x) if (x := remotes.summary(dest.key, data.key, step.key, s))
                                else None for s in dest.subjects},
                    "mib_per_s": {s: r.median if r else None for s, r in rates.items()},
                    "bytes": {s: remotes.bytes_moved(dest.key, data.key, step.key, s) for s in dest.subjects},
                    "not_available": {s: why for s in dest.subjects
                                      if (why := remotes.reason(dest.key, data.key, s))},
                    "maiffs_to_rclone": ratios[0], "maiffs_to_baseline": ratios[1],
                })
    return {
        "datasets": [{"key": d.key, "label": d.label, "files": d.files, "logical_bytes": d.logical_bytes,
                      "change_writes": len(d.writes), "changed_files": len(d.changed),
                      "changed_bytes": d.changed_bytes, "make_seconds": d.make_seconds}
                     for d in remotes.datasets],
        "tools": remotes.tools, "setup": remotes.setup, "rows": rows, "notes": remotes.notes,
    }


def _follow_cell(follow: FollowResults, dest: str, key: str) -> str:
    """Median seconds ±half the range in %, * if disturbed; n/a when there is no number."""
    summary = follow.summary(dest, key)
    if summary is None:
        return "n/a"
    text = f"{_number(summary.median, 'time')}"
    if len(summary.samples) > 1:
        text += f" ±{summary.spread_pct / 2:.0f}%"
    return text + "*" * bool(summary.disturbed)


def _follow_numbers(follow: FollowResults, dest: str, key: str) -> dict[str, Any]:
    """A row's MiB/s (median), time ÷ the writer's row, daemon cores and note (hit rate, max)."""
    case = follow.cases[key]
    summary = follow.summary(dest, key)
    rate = follow.summary(dest, key, "rate") if case.rate else None
    baseline = follow.summary(dest, case.baseline) if case.baseline else None
    note = follow.notes.get(dest, {}).get(key, "")
    if summary and not case.rate and len(summary.samples) > 1:
        note = f"max {summary.high:.3f} s of {len(summary.samples)}"
    return {"mib_per_s": rate.median if rate else None, "to_writer": _ratio(summary, baseline),
            "daemon_cores": _cores(summary), "note": note}


def follow_table(follow: FollowResults) -> str:
    """A table per destination, a row per case: seconds, MiB/s, ÷ the writer's matching row
    (time over time: above 1 the follower is slower), the daemon's cores, the hit rate of an
    epoch or the slowest of the latencies; then the data, the setup and why a cell is n/a."""
    blocks, disturbed = [], False
    for dest in DESTINATIONS:
        header = [f"follower mounts: {dest.label}", "s", "MiB/s", "÷ writer", "CPU daemon", "note"]
        rows = []
        for key in follow.cases:
            numbers = _follow_numbers(follow, dest.key, key)
            rows.append([follow.cases[key].label, _follow_cell(follow, dest.key, key),
                         _optional(numbers["mib_per_s"], ",.0f"), _optional(numbers["to_writer"], ".2f"),
                         _optional(numbers["daemon_cores"], ".2f"), numbers["note"]])
        disturbed = disturbed or any(row[1].endswith("*") for row in rows)
        blocks.append(_render(header, rows, right_from=1))
    lines = ["\n\n".join(blocks),
             "s: median seconds ± half the range; ÷ writer: the median time over the writer's matching "
             "row's (the first epoch over its cold epoch, the others over its epoch again); CPU daemon: "
             "cores of the mount's daemon (writer or follower)"]
    if disturbed:
        lines.append("* another program dropped the page cache during a sample (a disturbance)")
    lines.append(follow.data)
    lines.extend(follow.setup)
    for dest in DESTINATIONS:
        if why := follow.unavailable.get(dest.key):
            lines.append(f"{dest.label}: {why}")
    return "\n".join(lines)


def follow_json(follow: FollowResults) -> dict[str, Any]:
    rows = []
    for dest in DESTINATIONS:
        for key, case in follow.cases.items():
            summary = follow.summary(dest.key, key)
            rows.append({"destination": dest.key, "key": key, "label": case.label, "unit": "s",
                         "baseline": case.baseline, "result": asdict(summary) if summary else None,
                         "not_available": follow.unavailable.get(dest.key),
                         **_follow_numbers(follow, dest.key, key)})
    return {"data": follow.data, "setup": follow.setup, "rows": rows}


def _rss_row(label: str, sample: RssSample | None) -> list[str]:
    if sample is None:
        return [label, "-", "-", "n/a", "n/a", "n/a"]
    return [label, f"{sample.files:,}", f"{sample.seconds:,.0f}", _bytes(sample.vm_rss),
            _bytes(sample.rss_anon), _bytes(sample.rss_file)]


def memory_table(mem: MemoryResults) -> str:
    """The daemon's RSS at its idle start, at 10/50/100% of the files, its peak and after a
    remount; then the rate, the configured caches and the bound on RssAnon, ok or MISS."""
    header = [f"maiffs daemon memory, {mem.files:,} files of {mem.payload_bytes} B ({mem.files_per_dir:,}/dir)",
              "files", "s", "VmRSS", "RssAnon", "RssFile"]
    rows = [_rss_row("right after mount (idle)", mem.idle)]
    rows += [_rss_row(f"at {p:.0%} of the files", mem.at(p)) for p in POINTS]
    rows.append(["peak over the samples", "", "", _bytes(mem.peak("vm_rss")), _bytes(mem.peak("rss_anon")),
                 _bytes(mem.peak("rss_file"))])
    rows.append(_rss_row("after unmount, mount, ls of a directory", mem.after_remount))
    lines = [_render(header, rows, right_from=1)]
    rate = mem.files / mem.create_seconds if mem.create_seconds else 0.0
    lines.append(f"created in {mem.create_seconds:,.1f} s ({rate:,.0f} files/s, 2 threads); "
                 f"{len(mem.samples)} samples, one every second")
    curve = mem.samples[:: -(-len(mem.samples) // 10)]
    curve += [s for s in mem.samples[-1:] if s not in curve]
    lines.append("RssAnon curve (files: MiB): " + ", ".join(
        f"{s.files:,}: {s.rss_anon / MIB:.0f}" for s in curve))
    lines.append("configured caches: " + ", ".join(f"{k} {_bytes(v)}" for k, v in mem.caches.items()))
    if (bound := mem.anon_bound()) is not None:
        met = mem.peak("rss_anon") <= bound
        lines.append(f"§7 target: peak RssAnon {_bytes(mem.peak('rss_anon'))} ≤ idle RssAnon "
                     f"{_bytes(mem.idle.rss_anon if mem.idle else 0)} + caches = {_bytes(bound)}: "
                     f"{'ok' if met else 'MISS'}")
    lines.append(f"unmount {mem.unmount_seconds:.1f} s, mount again {mem.mount_seconds:.1f} s")
    return "\n".join(lines)


def memory_json(mem: MemoryResults) -> dict[str, Any]:
    bound = mem.anon_bound()
    return {**asdict(mem), "peak_vm_rss": mem.peak("vm_rss"), "peak_rss_anon": mem.peak("rss_anon"),
            "peak_rss_file": mem.peak("rss_file"),
            "at": {f"{p:g}": asdict(s) if (s := mem.at(p)) else None for p in POINTS},
            "files_per_second": mem.files / mem.create_seconds if mem.create_seconds else None,
            "rss_anon_bound": bound,
            "target_met": mem.peak("rss_anon") <= bound if bound is not None else None}


def tables(results: Results, storage: list[StorageItem], snapshots: SnapshotResults | None,
           zips: ZipResults | None, remotes: RemoteResults | None, follow: FollowResults | None,
           memory: MemoryResults | None = None) -> list[str]:
    """The printed tables of the parts that ran, in the order they ran."""
    out = [timing_table(results)] if results.workloads else []
    if storage:
        out.append(storage_table(storage))
    if snapshots:
        out.append("\n".join([snapshot_table(snapshots), *snapshot_targets(snapshots)]))
    if zips:
        out.append(zip_table(zips))
    if remotes:
        out.append(remote_tables(remotes))
    if follow:
        out.append(follow_table(follow))
    if memory:
        out.append(memory_table(memory))
    return out


def to_json(results: Results, storage: list[StorageItem], meta: dict[str, Any],
            snapshots: SnapshotResults | None = None, zips: ZipResults | None = None,
            remotes: RemoteResults | None = None, follow: FollowResults | None = None,
            memory: MemoryResults | None = None) -> dict[str, Any]:
    workloads = []
    for key, workload in results.workloads.items():
        summaries = {t: results.summary(key, t) for t in TARGETS}
        to_ceiling = _ratio(summaries["maiffs"], summaries["memfs"])
        workloads.append({
            **asdict(workload),
            "results": {t: asdict(s) if s else None for t, s in summaries.items()},
            "maiffs_to_ceiling": to_ceiling,
            "maiffs_to_plain": _ratio(summaries["maiffs"], summaries["plain"]),
            "goal_met": goal_met(workload, to_ceiling),
        })
    return {
        **meta,
        "workloads": workloads,
        "storage": [{**asdict(item), "maiffs_to_tar_zstd3": item.to_tar_zstd, "goal_met": item.goal_met,
                     "tar_zstd3_ratio": item.ratio("tar_zstd3_bytes"),
                     "maiffs_stored_ratio": item.ratio("maiffs_stored_bytes"),
                     "maiffs_store_file_growth_ratio": item.ratio("maiffs_store_file_growth_bytes")}
                    for item in storage],
        "snapshots": snapshots_json(snapshots) if snapshots else None,
        "zips": zips_json(zips) if zips else None,
        "remotes": remotes_json(remotes) if remotes else None,
        "follow": follow_json(follow) if follow else None,
        "memory": memory_json(memory) if memory else None,
        "problems": results.problems,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
