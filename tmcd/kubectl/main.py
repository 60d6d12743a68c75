"""``kubectl tmc``: the kubectl plugin; subcommands are imported only when they run.

``kubectl-tmc version --client`` and the simple forms of ``get`` take a fast path that
imports neither click nor the resource types, so the plugin starts about as fast as Python.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # `typing` costs ~15 ms of import time on the fast path
if TYPE_CHECKING:
    from typing import Any

PROG = "kubectl tmc"
COMPLETE_VAR = "_KUBECTL_TMC_COMPLETE"

LAZY_COMMANDS: dict[str, str] = {
    "get": "tmcd.kubectl.get:get",
    "describe": "tmcd.kubectl.describe:describe",
    "delete": "tmcd.kubectl.delete:delete",
    "apply": "tmcd.kubectl.apply:apply",
    "version": "tmcd.kubectl.version:version",
    "completion": "tmcd.kubectl.completion:completion",
    "sync": "tmcd.kubectl.sync:sync",
    "placement": "tmcd.kubectl.placement:placement",
    "canary": "tmcd.kubectl.canary:canary",
    "history": "tmcd.kubectl.history:history",
    "rollback": "tmcd.kubectl.rollback:rollback",
    "dashboard": "tmcd.kubectl.dashboard:dashboard",
}
"""Command name -> ``module:attribute``."""


def _client_version() -> str:
    from tmcd import __version__

    return f"Client Version: v{__version__}"


def _fast(argv: list[str]) -> int | None:
    """Handle ``version --client`` and simple ``get``s without click; None means "use click"."""
    if argv == ["version", "--client"]:
        sys.stdout.write(_client_version() + "\n")
        return 0
    if argv[:1] == ["get"] and not os.environ.get(COMPLETE_VAR) and not os.environ.get("KUBECONFIG"):
        from tmcd.kubectl.errors import CliError
        from tmcd.kubectl.getcore import parse_fast, run_fast

        parsed = parse_fast(argv[1:])
        if parsed is None:
            return None
        try:
            result = run_fast(parsed, dict(os.environ))
        except CliError as err:
            sys.stderr.write(err.line() + "\n")
            return err.exit_code
        if result.out:
            sys.stdout.write(result.out + ("\n" if result.newline else ""))
        if result.note:
            sys.stderr.write(result.note + "\n")
        return 0
    return None


def build_cli() -> Any:
    """The click root group (imports click)."""
    from tmcd.kubectl.root import cli

    return cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the kubectl-tmc console script."""
    args = sys.argv[1:] if argv is None else argv
    code = _fast(args)
    if code is not None:
        sys.stdout.flush()
        raise SystemExit(code)
    cli = build_cli()
    cli.main(args=args, prog_name=PROG, complete_var=COMPLETE_VAR)


if __name__ == "__main__":  # pragma: no cover
    main()
