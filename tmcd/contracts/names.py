"""Validation of the names that become NATS subject tokens.

Cluster, namespace, workload, placement and route names are DNS-1123 labels, as in
Kubernetes.  They are checked before any subject is built, because a token holding
``.``, ``*``, ``>`` or whitespace would silently change which messages a subject matches.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBJECT_BREAKERS = frozenset(".*>")
MAX_LABEL_LENGTH = 63


class InvalidNameError(ValueError):
    """A name that cannot be used as a resource name and subject token."""

    def __init__(self, what: str, name: object, reason: str) -> None:
        self.what = what
        self.name = name
        self.reason = reason
        super().__init__(f"invalid {what} name {name!r}: {reason}")


def validate_name(name: object, what: str = "resource") -> str:
    """Return ``name`` if it is a DNS-1123 label, else raise :class:`InvalidNameError`.

    ``what`` names the kind of name ("cluster", "namespace", ...) for the error message.
    """
    if not isinstance(name, str):
        raise InvalidNameError(what, name, "must be a string")
    if not name:
        raise InvalidNameError(what, name, "must not be empty")
    bad = sorted({c for c in name if c in _SUBJECT_BREAKERS or c.isspace()})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidNameError(what, name, f"contains {shown}, which cannot appear in a NATS subject token")
    if len(name) > MAX_LABEL_LENGTH:
        raise InvalidNameError(what, name, f"must be at most {MAX_LABEL_LENGTH} characters")
    if not _DNS1123_LABEL.match(name):
        raise InvalidNameError(
            what,
            name,
            "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name


def is_valid_name(name: object) -> bool:
    """True when ``name`` passes :func:`validate_name`."""
    try:
        validate_name(name)
    except InvalidNameError:
        return False
    return True
