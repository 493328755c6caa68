"""Prometheus metrics of a mounted store (`-o metrics=[HOST:]PORT`), served over HTTP by a thread
of the daemon from a registry of its own.

Off by default, and then nothing here runs or is even imported: the FUSE handlers are wrapped
only when the option is given. The per-request numbers (count and latency per operation, errors,
bytes read and written) are kept by the wrappers; everything else (the store's counters, its
commits, the chunk cache, replication lag, a follower's cache) is read when Prometheus scrapes,
from the same numbers as `.maiffs/stats`, on the trio thread that owns them.
"""

from __future__ import annotations

import errno
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pyfuse3
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from maiffs.errors import StoreError

log = logging.getLogger(__name__)

#: The requests pyfuse3 passes to the Operations object (its coroutine methods).
FUSE_OPERATIONS = tuple(name for name, fn in vars(pyfuse3.Operations).items()
                        if inspect.iscoroutinefunction(fn))
#: Latency buckets, seconds: a cached getattr takes microseconds, a flush of a large file seconds.
BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class Metrics:
    """The daemon's metrics: the wrappers' counters, and the numbers read at each scrape."""

    def __init__(self, numbers: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.seconds = Histogram("maiffs_fuse_operation_seconds",
                                 "Time taken to answer FUSE requests, by operation", ["op"],
                                 registry=self.registry, buckets=BUCKETS)
        self.errors = Counter("maiffs_fuse_errors", "FUSE requests answered with an error, by "
                              "operation and errno", ["op", "errno"], registry=self.registry)
        self.read_bytes = Counter("maiffs_read_bytes", "Bytes returned to read requests",
                                  registry=self.registry)
        self.written_bytes = Counter("maiffs_written_bytes", "Bytes taken by write requests",
                                     registry=self.registry)
        ProcessCollector(registry=self.registry)
        self.scraped = _Scraped(numbers)
        self.registry.register(self.scraped)
        self.server: Any = None

    def instrument(self, ops: pyfuse3.Operations) -> None:
        """Wrap every FUSE handler ops provides (the ones it inherits answer ENOSYS)."""
        for name in FUSE_OPERATIONS:
            if getattr(type(ops), name) is not getattr(pyfuse3.Operations, name):
                setattr(ops, name, self._timed(name, getattr(ops, name)))

    def _timed(self, name: str, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        observe = self.seconds.labels(name).observe
        amount = {"read": lambda data: self.read_bytes.inc(len(data)),
                  "write": self.written_bytes.inc}.get(name)

        async def timed(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await handler(*args)
            except pyfuse3.FUSEError as exc:
                self.errors.labels(name, errno.errorcode.get(exc.errno, str(exc.errno))).inc()
                raise
            finally:
                observe(time.perf_counter() - start)
            if amount is not None:
                amount(result)
            return result
        return timed

    def serve(self, host: str, port: int) -> None:
        """Listen on host:port (StoreError if that cannot be had: taken, not an address here)."""
        try:
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise StoreError(f"cannot serve metrics on {host}:{port}: "
                             f"{exc.strerror or exc}") from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    def attach(self, token: trio.lowlevel.TrioToken) -> None:
        """The trio run whose thread the scrape-time numbers are read on (once it runs)."""
        self.scraped.token = token

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Scraped(Collector):
    """The numbers of `.maiffs/stats` (without the directory scan), as Prometheus metrics."""

    def __init__(self, numbers: Callable[[], dict[str, Any]]) -> None:
        self.numbers = numbers
        self.token: trio.lowlevel.TrioToken | None = None

    def collect(self) -> Iterator[Any]:
        if self.token is None:
            return
        try:  # on the trio thread: the daemon's state is only ever touched there
            n = trio.from_thread.run_sync(self.numbers, trio_token=self.token)
        except trio.RunFinishedError:  # unmounting
            return
        except Exception as exc:  # a scrape must not take the daemon down
            log.error("metrics: %s", exc)
            return
        yield from _store_metrics(n)
        yield from _cache_metrics(n["chunk_cache"])
        yield from _replication_metrics(n["replication"])
        if "follow" in n:
            yield from _follow_metrics(n["follow"])


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _store_metrics(n: dict[str, Any]) -> Iterator[Any]:
    yield _counter("maiffs_commits", "Write transactions the store has committed", n["commits"])
    yield _gauge("maiffs_last_commit_timestamp_seconds", "When the store last committed",
                 n["last_commit_ns"] / 1e9)
    yield _gauge("maiffs_open_files", "Files open through the mount", n["open_files"])
    for key, text in (("inodes", "Inodes of the live tree"), ("chunks", "Distinct chunks"),
                      ("snapshots", "Snapshots"),
                      ("logical_bytes", "Bytes of the live files"),
                      ("referenced_bytes", "Bytes of chunks the live files refer to"),
                      ("unique_bytes", "Bytes of distinct chunks, before compression"),
                      ("stored_bytes", "Bytes of distinct chunks as stored"),
                      ("store_file_bytes", "Size of the store's data file")):
        yield _gauge(f"maiffs_store_{key.removeprefix('store_')}", text, n[key])


def _cache_metrics(cache: dict[str, Any]) -> Iterator[Any]:
    yield _counter("maiffs_chunk_cache_hits", "Chunk reads answered from the memory cache",
                   cache["hits"])
    yield _counter("maiffs_chunk_cache_misses", "Chunk reads the memory cache could not answer",
                   cache["misses"])
    yield _gauge("maiffs_chunk_cache_bytes", "Bytes of decompressed chunks in memory", cache["bytes"])
    yield _gauge("maiffs_chunk_cache_limit_bytes", "Bound of the memory cache", cache["limit_bytes"])


def _replication_metrics(remotes: dict[str, dict[str, Any]]) -> Iterator[Any]:
    lag = GaugeMetricFamily("maiffs_replication_lag_seconds", "Age of the oldest snapshot a "
                            "replicate= remote lacks (0 when up to date)", labels=["remote"])
    behind = GaugeMetricFamily("maiffs_replication_snapshots_behind",
                               "Snapshots a replicate= remote lacks", labels=["remote"])
    failing = GaugeMetricFamily("maiffs_replication_failing",
                                "1 while the last push to the remote failed", labels=["remote"])
    for name, state in remotes.items():
        lag.add_metric([name], state["lag_seconds"])
        behind.add_metric([name], state["snapshots_behind"])
        failing.add_metric([name], 1 if state["last_error"] else 0)
    yield from (lag, behind, failing)


def _follow_metrics(follow: dict[str, Any]) -> Iterator[Any]:
    yield _counter("maiffs_follow_hits", "A follower's chunk reads answered locally", follow["hits"])
    yield _counter("maiffs_follow_misses", "A follower's chunk reads fetched from its remote",
                   follow["misses"])
    yield _counter("maiffs_follow_evictions", "Chunks a follower dropped to stay in its bound",
                   follow["evictions"])
