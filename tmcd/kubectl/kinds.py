"""The kinds as ``kubectl tmc`` names them, without importing the resource types (fast startup).

A test checks this table against :data:`tmcd.resources.kinds.KINDS`.
"""

from __future__ import annotations


class CliKind:
    """What the plugin needs to know about a kind (no dataclass: it would import inspect)."""

    __slots__ = ("aliases", "api_version", "kind", "namespaced", "plural", "singular")

    def __init__(
        self, kind: str, plural: str, singular: str, api_version: str, namespaced: bool, aliases: tuple[str, ...]
    ) -> None:
        self.kind = kind
        self.plural = plural
        self.singular = singular
        self.api_version = api_version
        self.namespaced = namespaced
        self.aliases = aliases

    def __repr__(self) -> str:
        return f"CliKind({self.kind})"

    @property
    def group(self) -> str:
        """The API group, e.g. ``scheduling.kcp.io``."""
        return self.api_version.partition("/")[0]

    @property
    def resource(self) -> str:
        """``plural.group``, as kubectl prints it in messages."""
        return f"{self.plural}.{self.group}"

    def ref(self, name: str) -> str:
        """``singular.group/NAME`` (``-o name`` and apply/delete messages)."""
        return f"{self.singular}.{self.group}/{name}"


CLI_KINDS: tuple[CliKind, ...] = (
    CliKind(
        "SyncTarget", "synctargets", "synctarget", "workload.kcp.io/v1alpha1", False, ("cl", "cluster", "clusters")
    ),
    CliKind("Placement", "placements", "placement", "scheduling.kcp.io/v1alpha1", False, ("pl",)),
    CliKind(
        "CanaryRollout", "canaryrollouts", "canaryrollout", "tmc.kcp.io/v1alpha1", True, ("cr", "canary", "canaries")
    ),
    CliKind("AnalysisTemplate", "analysistemplates", "analysistemplate", "tmc.kcp.io/v1alpha1", True, ("at",)),
    CliKind(
        "RolloutRevision",
        "rolloutrevisions",
        "rolloutrevision",
        "tmc.kcp.io/v1alpha1",
        True,
        ("rev", "revision", "revisions"),
    ),
)

_BY_NAME: dict[str, CliKind] = {
    n.lower(): k for k in CLI_KINDS for n in (k.kind, k.plural, k.singular, k.resource, *k.aliases)
}


def resolve(name: str) -> CliKind | None:
    """The kind a user typed (kind, plural, singular, short name, ``plural.group``), any case."""
    return _BY_NAME.get(name.lower())


def by_kind(kind: str, api_version: str = "") -> CliKind | None:
    """The kind of a manifest (``kind`` and, if given, ``apiVersion``)."""
    for k in CLI_KINDS:
        if k.kind == kind and (not api_version or k.api_version == api_version):
            return k
    return None


def known_names() -> str:
    """A short list of what ``get`` accepts, for error messages."""
    return "clusters (cl), placements (pl), canaries (cr), revisions (rev), analysistemplates (at)"
