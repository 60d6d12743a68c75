"""The plugin's own kind table (kept import-light for start-up) agrees with tmcd's."""

from __future__ import annotations

from tmcd.kubectl.kinds import CLI_KINDS
from tmcd.resources.kinds import KINDS


def test_cli_kinds_match_the_resource_kinds() -> None:
    cli = {k.kind: (k.plural, k.singular, k.api_version, k.namespaced) for k in CLI_KINDS}
    real = {k.kind: (k.plural, k.singular, k.api_version, k.namespaced) for k in KINDS}
    assert cli == real
    for k in KINDS:
        cli_kind = next(c for c in CLI_KINDS if c.kind == k.kind)
        assert set(k.short_names) <= set(cli_kind.aliases)
