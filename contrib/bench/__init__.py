"""The maiffs benchmark harness: `.venv/bin/python -m contrib.bench` (see docs/performance.md).

Runs from the repository root; measures memfs (an in-memory pyfuse3 ceiling), a plain directory
and maiffs in one run and reports maiffs as ratios to both, as design.md §7 asks.
"""
