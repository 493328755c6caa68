"""Shell completion: the script `maiffs completion SHELL` prints, run by the real shell, offers
commands, options and (for `maiffs umount`) the maiffs mount points."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import maiffs
from fsutil import run

#: stand-ins for zsh's completion builtins, which only work inside a completion widget: each
#: prints the candidates it was given, one a line (_describe's are NAME:DESCRIPTION)
ZSH_STUBS = """
compdef() { : }
_describe() { print -rl -- "${(@P)3}" }
compadd() { print -rl -- "${(@P)${@[-1]}}" }
_path_files() { print -r -- "<files>" }
"""


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a `maiffs` running this tree (the scripts call it by name)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "maiffs"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -m maiffs "$@"\n')
    launcher.chmod(0o755)
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def bash_candidates(script: Path, env: dict[str, str], *words: str) -> list[str]:
    """What bash's COMPREPLY holds after the completion function ran on words (the last one
    being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    done = run("bash", "-c", f'source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; '
               f'COMPREPLY=(); _maiffs_completion maiffs; printf "%s\\n" "${{COMPREPLY[@]}}"', env=env)
    return done.stdout.splitlines()


def zsh_candidates(script: Path, env: dict[str, str], *words: str) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    done = run("zsh", "-f", "-c", f"{ZSH_STUBS}\nsource {script}; words=({quoted}); "
               f"CURRENT={len(words)}; _maiffs_completion", env=env)
    return [line.split(":", 1)[0] for line in done.stdout.splitlines()]


def test_bash_completes_commands_options_and_mount_points(tmp_path, shell_env, mounted):
    script = tmp_path / "maiffs.bash"
    script.write_text(maiffs("completion", "bash").stdout)
    assert bash_candidates(script, shell_env, "maiffs", "sn") == ["snapshot"]
    assert sorted(bash_candidates(script, shell_env, "maiffs", "snapshot", "")) == [
        "create", "delete", "diff", "list", "restore"]
    assert bash_candidates(script, shell_env, "maiffs", "mount", "--fo") == ["--foreground", "--follow"]
    assert str(mounted.path) in bash_candidates(script, shell_env, "maiffs", "umount", "")
    assert bash_candidates(script, shell_env, "maiffs", "umount", str(mounted.path)[:-1]) == [str(mounted.path)]
    assert bash_candidates(script, shell_env, "maiffs", "completion", "") == ["bash", "zsh", "fish"]


def test_zsh_completes_commands_options_and_mount_points(tmp_path, shell_env, mounted):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (Debian package zsh)")
    script = tmp_path / "_maiffs"
    script.write_text(maiffs("completion", "zsh").stdout)
    assert zsh_candidates(script, shell_env, "maiffs", "sn") == ["snapshot"]
    assert zsh_candidates(script, shell_env, "maiffs", "mount", "--fo") == ["--foreground", "--follow"]
    assert zsh_candidates(script, shell_env, "maiffs", "umount", str(mounted.path)[:-1]) == [str(mounted.path)]
    assert zsh_candidates(script, shell_env, "maiffs", "fsck", "") == ["<files>"]  # a path


def test_an_unknown_shell_is_refused():
    done = maiffs("completion", "tcsh", check=False)
    assert done.returncode != 0 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in done.stderr
    assert done.stdout == ""
