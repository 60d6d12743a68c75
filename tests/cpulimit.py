"""Hold a process to a share of one CPU, as a pod whose node gives it only its CPU request does:
let it run for ``share`` of every short period and stop it for the rest (SIGCONT / SIGSTOP, the
way the ``cpulimit`` tool works, for machines without a cgroup to write to).

    python tests/cpulimit.py PID SHARE [PERIOD_MS]

Prints ``ready`` once it limits the process, then runs until the process exits or this one is
terminated; the process is always left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from types import FrameType


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def limit(pid: int, share: float, period: float) -> None:
    """Alternate SIGCONT and SIGSTOP on ``pid``: ``share`` x ``period`` seconds running, the rest stopped."""
    run, pause = share * period, (1.0 - share) * period
    try:
        while True:
            os.kill(pid, signal.SIGCONT)
            time.sleep(run)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(pause)
    except ProcessLookupError:
        return
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def main(argv: list[str]) -> int:
    pid, share = int(argv[0]), float(argv[1])
    period = float(argv[2]) / 1000 if len(argv) > 2 else 0.02
    if not 0.0 < share < 1.0:
        print("cpulimit: SHARE must be between 0 and 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    print("ready", flush=True)
    limit(pid, share, period)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
