"""bench/rollback.py's scenario, small: tmcd, the fleet and the mesh as processes; a canary at 50 %
on every one of 5 clusters is aborted.  The mesh acknowledges 100 % stable everywhere before the
rollout is RolledBack, and no request went unrouted.  Times are the bench's business, not asserted."""

from __future__ import annotations

from pathlib import Path

from bench.rollback import NAMESPACE, abort_once, running_stack
from tests.helpers import nats_connect


async def test_an_aborted_canary_is_back_on_stable_everywhere_before_it_is_rolled_back(tmp_path: Path) -> None:
    async with running_stack(5, tmp_path, rps=1000, window=0.5) as stack:
        nc = await nats_connect(stack.url)
        try:
            result = await abort_once(stack, nc, "rb-small")
        finally:
            await nc.close()
        code, body = await stack.get(f"/api/v1/namespaces/{NAMESPACE}/canaryrollouts/rb-small")
    assert 0 < result.reversal_s <= result.total_s  # the mesh's acknowledgement came first
    assert result.canary_after == {f"sim-00{i}": 0 for i in range(1, 6)}
    assert result.unrouted == 0
    assert code == 200 and body["status"]["phase"] == "RolledBack"
    assert body["status"]["currentWeight"] == 0 and body["status"]["canaryClusters"] == []
