"""``kubectl tmc get``."""

from __future__ import annotations

import click

from tmcd.kubectl.common import CONTEXT_SETTINGS, client, global_options, kind_arg, namespace_for, settings
from tmcd.kubectl.errors import UsageError
from tmcd.kubectl.getcore import get as run_get
from tmcd.kubectl.output import FORMATS, TEMPLATE_FORMATS


def _complete_output(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    words = [*FORMATS, *(f"{t}=" for t in TEMPLATE_FORMATS)]
    return [w for w in words if w.startswith(incomplete)]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("kind", metavar="KIND")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "-o",
    "--output",
    default="table",
    metavar="FORMAT",
    shell_complete=_complete_output,
    help="table, wide, json, yaml, name, jsonpath=TEMPLATE, jsonpath-file=FILE, custom-columns=SPEC, "
    "custom-columns-file=FILE.",
)
@click.option(
    "--template",
    default="",
    metavar="TEMPLATE",
    help="The template of -o jsonpath / -o jsonpath-file (instead of jsonpath=TEMPLATE).",
)
@click.option(
    "--allow-missing-template-keys",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="With -o jsonpath: print nothing for a field the object lacks (false: fail with 'X is not found').",
)
@click.option("-l", "--selector", default="", metavar="SELECTOR", help="Label selector, e.g. region=eu-west-1.")
@click.option("-w", "--watch", is_flag=True, help="After listing, print a row for every change (until Ctrl-C).")
@click.option(
    "--output-watch-events", is_flag=True, help="With --watch, add an EVENT column (ADDED, MODIFIED, DELETED)."
)
@global_options
@click.pass_context
def get(
    ctx: click.Context,
    kind: str,
    names: tuple[str, ...],
    output: str,
    selector: str,
    watch: bool,
    output_watch_events: bool,
    template: str,
    allow_missing_template_keys: bool,
) -> None:
    """Display clusters, placements, canaries or revisions.

    KIND is clusters (cl), placements (pl), canaries (cr), revisions (rev) or
    analysistemplates (at); kind, plural and singular names work too.

    \b
    Examples:
      kubectl tmc get clusters
      kubectl tmc get cl -l region=eu-west-1 -o wide
      kubectl tmc get placement web -o yaml
      kubectl tmc get canaries -A
      kubectl tmc get rev -n shop -o name
      kubectl tmc get cl -w --output-watch-events
      kubectl tmc get pl -o jsonpath='{range .items[*]}{.metadata.name}{"\\t"}{.status.phase}{"\\n"}{end}'
      kubectl tmc get cl -o custom-columns=NAME:.metadata.name,REGION:.metadata.labels.region
    """
    output = output.removeprefix("=")  # `-o=json`, as kubectl accepts it
    if template:
        if output not in ("jsonpath", "jsonpath-file"):
            raise UsageError("--template is for -o jsonpath or -o jsonpath-file")
        output = f"{output}={template}"
    k = kind_arg(kind)
    c = client(ctx)
    s = settings(ctx)
    result = run_get(
        c,
        k,
        list(names),
        namespace=namespace_for(ctx, k, c.endpoint),
        all_namespaces=s.all_namespaces,
        selector=selector,
        output=output,
        allow_missing_keys=allow_missing_template_keys,
    )
    if result.out:
        click.echo(result.out, nl=result.newline)
    if result.note:
        click.echo(result.note, err=True)
    if watch:
        from tmcd.kubectl.watch import watch_rows

        ns = "" if (s.all_namespaces or not k.namespaced) else namespace_for(ctx, k, c.endpoint)
        # from the list just printed: nothing changed after it is missed
        rows = watch_rows(
            c,
            k,
            set(names),
            ns,
            output,
            output_watch_events,
            s.all_namespaces,
            resource_version=result.resource_version,
            selector=selector,
        )
        for line in rows:
            click.echo(line)
