"""Timing one operation on one target, and the summary statistics of repeated timings.

A sample records wall time and the serving daemon's CPU time over exactly the same interval,
so "cores used" (CPU seconds per wall second) shows whether maiffs keeps both cores busy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from contrib.bench.system import cache_drops, cpu_seconds
from contrib.bench.targets import Target

Kind = Literal["rate", "time"]


@dataclass
class Sample:
    """One timed run: `amount` units (MiB, files, entries) moved in `seconds`."""

    seconds: float
    amount: float
    daemon_cpu_seconds: float | None
    #: Page-cache drops by other programs during the sample (it may have been disturbed).
    foreign_cache_drops: int = 0

    def value(self, kind: Kind) -> float:
        return self.amount / self.seconds if kind == "rate" else self.seconds


def timed(target: Target, operation: Callable[[], float]) -> Sample:
    """Run operation (which returns the amount it moved) and time it and the daemon's CPU."""
    pid = target.daemon_pid()
    return timed_cpu(lambda: cpu_seconds(pid), operation)


def timed_cpu(cpu: Callable[[], float | None], operation: Callable[[], float]) -> Sample:
    """Like timed, with the CPU time that counts read by cpu() (for work done by a client
    process rather than by a mount's daemon)."""
    drops_before, cpu_before = cache_drops(), cpu()
    start = time.perf_counter()
    amount = operation()
    seconds = time.perf_counter() - start
    cpu_after, drops_after = cpu(), cache_drops()
    used = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Sample(seconds, amount, used, drops_after - drops_before)


@dataclass
class Summary:
    """Median and spread of a workload's samples on one target; `disturbed` counts samples
    during which another program dropped the page cache."""

    median: float
    low: float
    high: float
    spread_pct: float
    daemon_cores: float | None
    disturbed: int = 0
    samples: list[dict[str, float | None]] = field(default_factory=list)

    @classmethod
    def of(cls, samples: list[Sample], kind: Kind) -> "Summary":
        values = [s.value(kind) for s in samples]
        median = statistics.median(values)
        cpus = [s.daemon_cpu_seconds for s in samples]
        cores = (sum(c for c in cpus if c is not None) / sum(s.seconds for s in samples)
                 if all(c is not None for c in cpus) else None)
        return cls(median=median, low=min(values), high=max(values),
                   spread_pct=(max(values) - min(values)) / median * 100 if median else 0.0,
                   daemon_cores=cores, disturbed=sum(1 for s in samples if s.foreign_cache_drops),
                   samples=[asdict(s) for s in samples])
