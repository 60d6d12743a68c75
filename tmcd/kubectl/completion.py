"""``kubectl tmc completion``."""

from __future__ import annotations

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for kubectl-tmc.

    \b
    Examples:
      source <(kubectl tmc completion bash)
      kubectl tmc completion zsh > "${fpath[1]}/_kubectl-tmc"
      kubectl tmc completion fish > ~/.config/fish/completions/kubectl-tmc.fish
    """
    from click.shell_completion import get_completion_class

    from tmcd.kubectl.main import COMPLETE_VAR

    cls = get_completion_class(shell)
    assert cls is not None
    comp = cls(ctx.find_root().command, {}, "kubectl-tmc", COMPLETE_VAR)
    click.echo(comp.source())
