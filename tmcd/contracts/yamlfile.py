"""YAML as tmcd writes its generated files (the AsyncAPI document, the CRDs).

Block style, no anchors or aliases for repeated objects, multi-line text as literal blocks,
no line wrapping, keys in the order the document was built: the bytes depend only on the
document (and the pinned PyYAML), so a test can compare a committed file with a fresh render.
"""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never writes anchors/aliases for repeated objects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Multi-line text reads best as a literal block.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(doc: Any) -> str:
    """``doc`` as a YAML document (UTF-8 text, keys in insertion order)."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100_000, default_flow_style=False)
