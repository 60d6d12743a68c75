"""``kubectl tmc delete``."""

from __future__ import annotations

import sys

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options, kind_arg, namespace_for


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("kind", metavar="KIND")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@global_options
@click.pass_context
def delete(ctx: click.Context, kind: str, names: tuple[str, ...], yes: bool) -> None:
    """Delete objects of any kind `get` shows (asks first on a terminal unless --yes).

    KIND is clusters (cl), placements (pl), canaries (cr), revisions (rev) or
    analysistemplates (at); kind, plural and singular names work too.

    \b
    Examples:
      kubectl tmc delete placement web
      kubectl tmc delete canary checkout -n shop --yes
      kubectl tmc delete at error-rate -n shop
    """
    k = kind_arg(kind)
    c = client(ctx)
    ns = namespace_for(ctx, k, c.endpoint)
    for name in names:
        where = f' in namespace "{ns}"' if ns else ""
        if not yes and sys.stdin.isatty():
            click.confirm(f'Delete {k.singular} "{name}"{where}?', abort=True)
        c.call("delete", k, namespace=ns, name=name)
        click.echo(f'{k.singular}.{k.group} "{name}" deleted')
