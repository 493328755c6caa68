"""docs/reference.md is generated from the CLI and the mount options: it must be up to date and
name exactly the options the parser accepts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from contrib.gen_reference import REGENERATE, markdown_help, walk
from maiffs.errors import StoreError
from maiffs.options import MountOptions, documented, option_fields

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"


def reference_options() -> list[str]:
    """The option names in the reference's mount options table."""
    text = REFERENCE.read_text()
    table = text[text.index("## Mount options"):]
    return re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE)


def test_reference_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "reference.md"
    subprocess.run([sys.executable, "-m", "contrib.gen_reference", "--output", str(fresh)],
                   cwd=ROOT, check=True, capture_output=True)
    assert fresh.read_text() == REFERENCE.read_text(), (
        f"docs/reference.md is out of date: run `{REGENERATE}` in the repository root")


def test_reference_names_every_option_the_parser_accepts() -> None:
    listed = reference_options()
    assert sorted(listed) == sorted(f.name for f in option_fields()), (
        f"mount options and docs/reference.md differ: run `{REGENERATE}`")
    for name in listed:  # each is accepted (a bad value is, an unknown name is not)
        try:
            MountOptions.parse([f"{name}=x"])
        except StoreError as exc:
            assert "unknown mount option" not in str(exc)
    with pytest.raises(StoreError, match="unknown mount option"):
        MountOptions.parse(["no_such_option"])


def test_every_option_says_what_it_does_and_takes() -> None:
    for f, doc in zip(option_fields(), documented()):
        assert doc.help, f"mount option {f.name} has no help: declare it with option(default, help)"
        takes_value = f.type not in (bool, "bool")
        assert bool(doc.value) == takes_value, f"mount option {f.name}: VALUE is for non-flags"


def test_mount_help_lists_every_option() -> None:
    shown = subprocess.run([sys.executable, "-m", "maiffs", "mount", "--help"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout
    section = shown[shown.index("Mount options"):]
    for doc in documented():
        assert re.search(rf"^  {re.escape(doc.spec)}\s", section, re.MULTILINE), doc.spec


def test_generator_walks_nested_groups_and_skips_hidden() -> None:
    @click.group()
    def top() -> None:
        """Top."""

    @top.group()
    def outer() -> None:
        """Outer."""

    @outer.command()
    @click.option("--deep", help="A deep option.")
    def inner(deep: str) -> None:
        """Inner."""

    @top.command(hidden=True)
    def secret() -> None:
        """Hidden."""

    paths = [ctx.command_path for ctx in walk(top, click.Context(top, info_name="prog"))]
    assert paths == ["prog", "prog outer", "prog outer inner"]


def test_unwrapped_help_paragraphs_stay_as_written() -> None:
    text = ("Intro line\n    continues.\n\n    \b\n      a   b\n      c   d\n\n    End.\n"
            "    \f\n    Not shown.")
    assert markdown_help(text) == ["Intro line\ncontinues.", "", "```", "  a   b\n  c   d", "```",
                                   "", "End.", ""]

