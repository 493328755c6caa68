"""Shell completion: `maiffs completion bash|zsh|fish` prints the script click generates for
this command tree; the shell then asks `maiffs` itself (through $_MAIFFS_COMPLETE) what fits."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class

from maiffs.mounts import maiffs_mounts

COMPLETE_VAR = "_MAIFFS_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL. Install it with, for bash:
    `maiffs completion bash > /etc/bash_completion.d/maiffs`; for zsh:
    `maiffs completion zsh > "${fpath[1]}/_maiffs"` (see docs/operations.md)."""
    root = click.get_current_context().find_root()
    script = get_completion_class(shell)(root.command, {}, root.info_name or "maiffs", COMPLETE_VAR)
    click.echo(script.source())


def mounted_points(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The maiffs mount points starting with what was typed (for `maiffs umount`)."""
    return [CompletionItem(m.mountpoint) for m in maiffs_mounts() if m.mountpoint.startswith(incomplete)]
