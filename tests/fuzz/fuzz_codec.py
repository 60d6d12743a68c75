"""atheris harness: every message type of the NATS contract decoded from arbitrary bytes.

Only ``InvalidMessage`` (with a reason and kind tmc_events_invalid_total knows) may come out of
:func:`tmcd.contracts.codec.decode`, and whatever decodes must survive a round trip.  Run:
``python tests/fuzz/fuzz_codec.py -max_total_time=60`` (see tests/fuzz/README.md).
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
    harness.run("codec", targets.codec_target, targets.codec_seeds, targets.codec_words)
