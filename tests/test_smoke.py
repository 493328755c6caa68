"""The basic promise: what is written through a mount reads back, also after a remount."""

import os

from conftest import maiffs


def test_write_read_remount(mounted):
    data = os.urandom(3 << 20) + b"tail"
    (mounted.path / "f").write_bytes(data)
    (mounted.path / "d").mkdir()
    (mounted.path / "d" / "small").write_text("hello\n")
    assert (mounted.path / "f").read_bytes() == data
    mounted.remount()
    assert (mounted.path / "f").read_bytes() == data
    assert (mounted.path / "d" / "small").read_text() == "hello\n"
    assert sorted(os.listdir(mounted.path)) == ["d", "f"]


def test_stat_reports_dedup(mounted):
    data = os.urandom(2 << 20)
    (mounted.path / "a").write_bytes(data)
    (mounted.path / "b").write_bytes(data)
    out = maiffs("stat", "--json", mounted.path).stdout
    import json
    report = json.loads(out)
    assert report["logical_bytes"] == 4 << 20
    assert report["unique_bytes"] == 2 << 20
    assert report["dedup_ratio"] == 2.0
