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

from contrib.bench.measure import Summary
from contrib.bench.storage import StorageItem
from contrib.bench.workloads import MIB, Results, Workload

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
              "maiffs LMDB file growth", "maiffs/tar+zstd"]
    rows = [[item.name, str(item.files), _bytes(item.logical_bytes),
             _size(item.plain_allocated_bytes, item.logical_bytes),
             _size(item.tar_zstd3_bytes, item.logical_bytes),
             _size(item.maiffs_stored_bytes, item.logical_bytes),
             _size(item.maiffs_store_file_growth_bytes, item.logical_bytes),
             f"{item.maiffs_stored_bytes / item.tar_zstd3_bytes:.2f}" if item.tar_zstd3_bytes else "-"]
            for item in items]
    return _render(header, rows, right_from=1)


def to_json(results: Results, storage: list[StorageItem], meta: dict[str, Any]) -> dict[str, Any]:
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
        "storage": [{**asdict(item),
                     "tar_zstd3_ratio": item.ratio("tar_zstd3_bytes"),
                     "maiffs_stored_ratio": item.ratio("maiffs_stored_bytes"),
                     "maiffs_store_file_growth_ratio": item.ratio("maiffs_store_file_growth_bytes")}
                    for item in storage],
        "problems": results.problems,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
