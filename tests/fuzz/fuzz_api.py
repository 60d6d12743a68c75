"""atheris harness: the resource API's parsers from arbitrary bytes.

Request bodies as every kind (then encoded and read back as the store and the API cache do), merge
and JSON patches applied to each kind's example, label and field selectors, names, subjects and
quantities, the canary control body and NATS API requests: only 4xx ApiErrors (and the parsers'
own SelectorError, InvalidNameError, ValueError) may come out.  Run:
``python tests/fuzz/fuzz_api.py -max_total_time=60`` (see tests/fuzz/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz import harness


def _import() -> None:
    global targets
    from tests.fuzz import targets


if __name__ == "__main__":
    harness.instrumented(_import)
    harness.run("api", targets.api_target, targets.api_seeds, targets.api_words)
