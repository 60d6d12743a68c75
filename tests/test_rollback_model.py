"""The rollback plan and the rollback request rules: pure, with an injected clock."""

from __future__ import annotations

import msgspec
import pytest

from tests.test_canary_model import STEPS, T0, Driver, rollout, template
from tmcd.canary.control import control
from tmcd.canary.model import Applied
from tmcd.contracts.messages import RollbackControl
from tmcd.resources.canary import CanaryRollout, RolloutRevision, RolloutRevisionSpec
from tmcd.resources.meta import ObjectMeta
from tmcd.rollback.control import refuse_or_begin
from tmcd.rollback.model import RollbackEnv, advance, stage_applied


def running() -> CanaryRollout:
    d = Driver(rollout(STEPS), {"err": template()})
    d.tick()  # canary at 20 % on two clusters
    return d.r


def test_stages_run_in_order_and_the_reversal_waits_for_the_router() -> None:
    r = running()
    st, code, _ = control(r, "abort", T0)
    assert code == 200 and st.phase == "RollingBack" and st.rollback is not None and st.rollback.phase == "Pending"
    r = msgspec.structs.replace(r, status=st)
    seen: list[str] = []
    applied: Applied | None = None
    now = T0
    for _ in range(20):
        now += 0.1
        rb = r.status.rollback
        assert rb is not None
        if rb.phase in ("Completed", "Failed"):
            break
        if rb.stage_state == "Applying" and rb.phase != "Pending":
            seen.append(f"apply {rb.phase}")
            st, _ev = stage_applied(r, now)
            if rb.phase == "Reversing":
                assert advance(msgspec.structs.replace(r, status=st), RollbackEnv(now=now)).status == st  # no ack yet
                applied = Applied(rb.generation, {c: 0 for c in r.status.canary_clusters})
        else:
            plan = advance(r, RollbackEnv(now=now, applied=applied, next_generation=int(now * 1000)))
            st = plan.status
            seen += [f"event {e.stage}" for e in plan.events]
        r = msgspec.structs.replace(r, status=st)
    assert seen == [
        "event started",
        "apply Reversing",
        "event traffic",
        "apply Restoring",
        "apply CleaningUp",
        "event completed",
    ]
    st = r.status
    assert st.phase == "RolledBack" and st.current_weight == 0 and st.canary_clusters == []
    assert st.rollback is not None and [c.state for c in st.rollback.clusters] == ["Restored", "Restored"]
    assert st.rollback.generation > st.action.generation  # type: ignore[union-attr]


def test_a_stage_being_applied_is_left_for_the_agent() -> None:
    r = running()
    st, _, _ = control(r, "abort", T0)
    r = msgspec.structs.replace(r, status=advance(msgspec.structs.replace(r, status=st), RollbackEnv(now=T0)).status)
    assert r.status.rollback is not None and r.status.rollback.stage_state == "Applying"
    assert advance(r, RollbackEnv(now=T0 + 5)).status == r.status


def req(to: int = 0) -> RollbackControl:
    return RollbackControl(namespace="shop", name="checkout", timestamp=T0, to_revision=to, requested_by="alice")


def revision(n: int, version: str) -> RolloutRevision:
    r = running()
    return RolloutRevision(
        metadata=ObjectMeta(name=f"checkout-{n}", namespace="shop"),
        spec=RolloutRevisionSpec(
            rollout="checkout", revision=n, rollout_spec=r.spec, version=version, placement=["c1", "c2"]
        ),
    )


def finished(stable_revision: int = 3, version: str = "v3") -> CanaryRollout:
    r = running()
    st = msgspec.structs.replace(
        r.status, phase="Succeeded", stable_revision=stable_revision, stable_version=version, canary_clusters=[]
    )
    return msgspec.structs.replace(r, status=st)


@pytest.mark.parametrize(
    ("phase", "to", "code", "words"),
    [
        ("RollingBack", 0, 409, "already in progress"),
        ("Pending", 0, 409, "nothing to roll back"),
        ("Degraded", 0, 409, "nothing to roll back"),
    ],
)
def test_requests_that_do_not_apply_are_refused(phase: str, to: int, code: int, words: str) -> None:
    r = running()
    r = msgspec.structs.replace(r, status=msgspec.structs.replace(r.status, phase=phase))
    st, got, msg = refuse_or_begin(r, req(to), None, T0)
    assert st is None and got == code and words in msg


def test_a_running_canary_rolls_back_to_stable_and_refuses_an_older_revision() -> None:
    r = running()
    st, code, msg = refuse_or_begin(r, req(), None, T0)
    assert code == 200 and st is not None and st.rollback is not None and st.rollback.trigger == "Manual"
    assert "alice" in st.rollback.reason and st.rollback.to_revision == r.status.stable_revision
    st, code, msg = refuse_or_begin(r, req(5), revision(5, "v0"), T0)
    assert st is None and code == 409 and "once the rollout has ended" in msg


def test_a_finished_rollout_goes_back_to_an_older_revision_and_ends_succeeded_on_it() -> None:
    r = finished()
    st, code, msg = refuse_or_begin(r, req(2), revision(2, "v2"), T0)
    assert code == 200 and st is not None and "revision 2 (v2)" in msg
    assert st.rollback is not None and st.rollback.target_version == "v2" and st.rollback.from_revision == 3
    r = msgspec.structs.replace(r, status=st)
    now, applied = T0, None
    for _ in range(10):
        now += 0.1
        rb = r.status.rollback
        assert rb is not None
        if rb.stage_state == "Applying" and rb.phase not in ("Pending", "Completed"):
            st, _ = stage_applied(r, now)
            applied = Applied(rb.generation, {})
        else:
            st = advance(r, RollbackEnv(now=now, applied=applied, next_generation=int(now * 1000))).status
        r = msgspec.structs.replace(r, status=st)
    assert r.status.phase == "Succeeded" and r.status.stable_version == "v2" and r.status.stable_revision == 2
    rb = r.status.rollback
    assert rb is not None and [(c.cluster, c.state) for c in rb.clusters] == [("c1", "Restored"), ("c2", "Restored")]


def test_rolling_back_to_what_is_stable_is_a_no_op_and_a_missing_revision_is_404() -> None:
    r = finished()
    st, code, msg = refuse_or_begin(r, req(3), revision(3, "v3"), T0)
    assert st is None and code == 200 and "already stable" in msg
    rolled = msgspec.structs.replace(r, status=msgspec.structs.replace(r.status, phase="RolledBack"))
    st, code, msg = refuse_or_begin(rolled, req(), None, T0)
    assert st is None and code == 200 and "nothing to do" in msg
    st, code, msg = refuse_or_begin(r, req(9), None, T0)
    assert st is None and code == 404 and "revision 9" in msg
