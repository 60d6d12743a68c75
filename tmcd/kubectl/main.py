"""`kubectl tmc`: the kubectl plugin (commands arrive module by module)."""

from __future__ import annotations

import click

from tmcd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """kubectl tmc: fleets, sync control, placement and rollouts for TMC."""


@cli.command()
@click.option("--client", is_flag=True, help="Print only the client version.")
def version(client: bool) -> None:
    """Print the kubectl-tmc version.

    \b
    Examples:
      kubectl tmc version --client
    """
    click.echo(f"Client Version: v{__version__}")


def main() -> None:
    """Entry point of the kubectl-tmc console script."""
    cli(prog_name="kubectl tmc")
