"""The revision history's pure model: which RolloutRevision records a rollout must have, and how each
reads, through a real canary lifecycle (the canary state machine played by the canary model's Driver)
and through rollbacks written as the rollback engine writes them; idempotent at every step; the
history limit and the never-delete-stable rule."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.test_canary_model import STEPS, T0, Driver, rollout, template
from tmcd.canary.control import control
from tmcd.resources import writes
from tmcd.resources.canary import CanaryRollout, RollbackStatus, RolloutRevision
from tmcd.resources.meta import ObjectMeta, rfc3339
from tmcd.resources.validate import validate
from tmcd.rollback.revisions import ROLLOUT_LABEL, Plan, history_limit, needs_eligible, owned, plan, revision_name


class History:
    """A store of revision records that applies plans as the keeper does (deletions, then writes)."""

    def __init__(self) -> None:
        self.records: dict[str, RolloutRevision] = {}
        self.applied = 0

    def sync(self, r: CanaryRollout | None, now: float, eligible: list[str] | None = None, **kw: Any) -> Plan:
        """Plan against the store, apply, and check that planning again changes nothing."""
        if r is not None and eligible is not None:
            assert needs_eligible(r, list(self.records.values())), "eligible clusters passed but not needed"
        p = plan(r, list(self.records.values()), now, eligible=eligible, **kw)
        for name in p.deletes:
            del self.records[name]
        for w in p.writes:
            assert validate(w.revision) == [], validate(w.revision)
            assert (w.revision.metadata.name in self.records) != w.create
            self.records[w.revision.metadata.name] = w.revision
        self.applied += bool(p)
        again = plan(r, list(self.records.values()), now + 60, **kw)
        assert not again, f"not idempotent: {again}"
        return p

    def by_number(self) -> dict[int, RolloutRevision]:
        return {r.spec.revision: r for r in self.records.values()}

    def table(self) -> list[tuple[int, str, str, str]]:
        """(revision, phase, trigger, version), newest first."""
        rows = sorted(self.records.values(), key=lambda r: -r.spec.revision)
        return [(r.spec.revision, r.status.phase, r.spec.trigger, r.spec.version) for r in rows]


def with_status(r: CanaryRollout, **status: Any) -> CanaryRollout:
    return msgspec.structs.replace(r, status=msgspec.structs.replace(r.status, **status))


def driver() -> Driver:
    d = Driver(rollout(STEPS), {"err": template()})
    d.r = msgspec.structs.replace(d.r, metadata=msgspec.structs.replace(d.r.metadata, uid="uid-1"))
    return d


def eligible(d: Driver, h: History) -> list[str] | None:
    """The eligible clusters when the model needs them, as the keeper passes them."""
    return [c.metadata.name for c in d.pool] if needs_eligible(d.r, list(h.records.values())) else None


def follow(d: Driver, h: History, seconds: float, until: str = "") -> None:
    """Run the rollout 10 s at a time, syncing the history after each tick, as the keeper would."""
    end = d.now + seconds
    while d.now < end and d.phase != until:
        d.now += 10.0
        d.feed()
        d.tick()
        h.sync(d.r, d.now, eligible(d, h))


def test_a_canary_that_succeeds_supersedes_the_version_it_started_from() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now, eligible(d, h))
    one, two = h.by_number()[1], h.by_number()[2]
    assert (one.metadata.name, two.metadata.name) == ("checkout-1", "checkout-2")
    assert one.spec.placement == ["c0", "c1", "c2", "c3", "c4", "c5"]  # the stable version ran everywhere
    for rec in (one, two):
        assert rec.metadata.labels == {ROLLOUT_LABEL: "checkout"} and owned(rec)
        [ref] = rec.metadata.owner_references
        assert (ref.kind, ref.name, ref.namespace, ref.uid) == ("CanaryRollout", "checkout", "shop", "uid-1")
        assert rec.spec.rollout_spec == d.r.spec and rec.status.start_time == rfc3339(T0)
    assert (one.spec.version, one.spec.trigger, one.status.phase) == ("v1", "Initial", "Active")
    assert one.spec.weights == {"stable": 100, "canary": 0}
    assert (two.spec.version, two.spec.stable_version, two.spec.trigger) == ("v2", "v1", "CanaryStarted")
    assert two.spec.placement == sorted(d.r.status.canary_clusters) and len(two.spec.placement) == 2
    assert two.spec.weights == {"stable": 80, "canary": 20} and two.status.outcome == "canary in progress"

    follow(d, h, 600, until="Succeeded")
    assert d.phase == "Succeeded"
    one, two = h.by_number()[1], h.by_number()[2]
    assert (one.status.phase, one.status.outcome) == ("Superseded", "superseded by revision 2")
    assert one.status.end_time == rfc3339(d.now)
    assert (two.status.phase, two.spec.trigger, two.status.outcome) == ("Active", "Promoted", "promoted")
    assert two.spec.weights == {"stable": 100, "canary": 0} and two.status.end_time == ""
    assert len(two.spec.placement) == 6  # promoted to every eligible cluster: it runs on all of them
    assert not needs_eligible(d.r, list(h.records.values()))


def test_a_failed_canary_is_failed_with_its_trigger_and_the_stable_one_stays() -> None:
    d, h = driver(), History()
    d.error_ratio = 0.05
    d.tick()
    h.sync(d.r, d.now)
    follow(d, h, 200, until="RolledBack")
    assert d.phase == "RolledBack"
    assert h.table() == [(2, "Failed", "AnalysisFailed", "v2"), (1, "Active", "Initial", "v1")]
    two = h.by_number()[2]
    assert two.status.outcome.startswith("rolled back to revision 1: AnalysisFailed: "), two.status.outcome
    assert two.status.end_time == rfc3339(d.now) and two.spec.weights == {"stable": 80, "canary": 20}
    # retry: the same version again under the next number
    st, code, _ = control(d.r, "retry", d.now)
    assert code == 200
    d.r = msgspec.structs.replace(d.r, status=st)
    d.error_ratio = 0.0
    h.sync(d.r, d.now)
    assert h.table()[:2] == [(3, "Active", "CanaryStarted", "v2"), (2, "Failed", "AnalysisFailed", "v2")]


def test_an_abort_seen_only_once_rolled_back_still_says_why() -> None:
    d, h = driver(), History()
    d.tick()
    st, _, _ = control(d.r, "abort", d.now)
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    assert d.phase == "RolledBack"
    h.sync(d.r, d.now)  # first sight: both records written at once
    assert h.table() == [(2, "Failed", "Aborted", "v2"), (1, "Active", "Initial", "v1")]
    assert h.by_number()[2].status.outcome.startswith("rolled back to revision 1: Aborted")


def test_the_rollback_engines_record_names_trigger_reason_and_target() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now)
    rb = RollbackStatus(phase="Reversing", trigger="ClusterUnhealthy", reason="sim-002 Unhealthy", from_revision=2)
    r = with_status(d.r, phase="RollingBack", abort_reason="ClusterUnhealthy", rollback=rb)
    h.sync(r, d.now + 1)
    two = h.by_number()[2]
    assert (two.status.phase, two.status.outcome) == ("Active", "rolling back: ClusterUnhealthy: sim-002 Unhealthy")
    rb = msgspec.structs.replace(rb, phase="Completed", to_revision=1)
    h.sync(with_status(r, phase="RolledBack", rollback=rb, current_weight=0, canary_clusters=[]), d.now + 2)
    two = h.by_number()[2]
    assert (two.status.phase, two.spec.trigger) == ("Failed", "ClusterUnhealthy")
    assert two.status.outcome == "rolled back to revision 1: ClusterUnhealthy: sim-002 Unhealthy"
    assert h.by_number()[1].status.phase == "Active"  # it never stopped being stable


def test_a_new_canary_version_mid_rollout_replaces_the_running_one() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now)
    spec = msgspec.structs.replace(d.r.spec, canary_version="v3")
    d.r = msgspec.structs.replace(d.r, spec=spec, metadata=msgspec.structs.replace(d.r.metadata, generation=2))
    d.now += 10
    d.tick()
    h.sync(d.r, d.now)
    assert h.table() == [
        (3, "Active", "CanaryStarted", "v3"),
        (2, "Superseded", "CanaryStarted", "v2"),
        (1, "Active", "Initial", "v1"),
    ]
    assert h.by_number()[2].status.outcome == "replaced by revision 3 before it was promoted"


def test_undo_after_success_restores_an_older_revision_then_a_new_one_supersedes_it() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now)
    st, _, _ = control(d.r, "promote", d.now, full=True)
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    assert d.phase == "Succeeded"
    h.sync(d.r, d.now)
    # the engine returns the rollout to revision 1: stable revision 1 again, Succeeded on it
    rb = RollbackStatus(
        phase="Completed", trigger="Manual", reason="bad release", from_revision=2, to_revision=1, end_time=""
    )
    undone = with_status(d.r, stable_revision=1, stable_version="v1", rollback=rb)
    h.sync(undone, d.now + 5)
    one, two = h.by_number()[1], h.by_number()[2]
    assert (one.status.phase, one.spec.trigger) == ("RolledBackTo", "RolledBack")
    assert one.status.outcome == "restored by a rollback from revision 2 (Manual)" and one.status.end_time == ""
    assert (two.status.phase, two.spec.trigger) == ("Superseded", "Manual")
    assert two.status.outcome == "rolled back to revision 1: Manual: bad release"
    # a later canary rollback to revision 1 does not rewrite how revision 1 came back
    rb2 = RollbackStatus(phase="Completed", trigger="Aborted", from_revision=3, to_revision=1)
    later = with_status(undone, phase="RolledBack", canary_revision=3, canary_version="v3", rollback=rb2)
    h.sync(later, d.now + 10)
    assert h.by_number()[1].status.outcome == "restored by a rollback from revision 2 (Manual)"
    assert h.table()[0] == (3, "Failed", "Aborted", "v3")
    # then revision 4 is promoted: revision 1 is superseded like any stable one
    h.sync(with_status(later, phase="Succeeded", stable_revision=4, canary_revision=4, canary_version="v4"), d.now + 20)
    assert h.table()[0][:2] == (4, "Active")  # missed while a canary: written as promoted
    assert h.by_number()[1].status.phase == "Superseded" and h.by_number()[1].status.end_time == rfc3339(d.now + 20)


def test_degraded_mid_rollout_fails_the_canary() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now)
    h.sync(with_status(d.r, phase="Degraded", message="spec.steps: empty"), d.now + 1)
    two = h.by_number()[2]
    assert (two.status.phase, two.spec.trigger) == ("Failed", "Degraded")
    assert two.status.outcome == "stopped: the spec cannot run: spec.steps: empty"


def _many(h: History, d: Driver, n: int) -> CanaryRollout:
    """n rolled-back canaries after revision 2 was promoted: revisions 1..n+2 (stable: 2)."""
    d.tick()
    h.sync(d.r, d.now)
    st, _, _ = control(d.r, "promote", d.now, full=True)
    d.r = msgspec.structs.replace(d.r, status=st)
    d.tick()
    h.sync(d.r, d.now)
    r = d.r
    for c in range(3, n + 3):
        r = with_status(r, phase="Progressing", canary_revision=c, canary_version=f"v{c}", rollback=None)
        h.sync(r, d.now + c)
        r = with_status(r, phase="RolledBack", abort_reason="Aborted")
        h.sync(r, d.now + c)
    return r


def test_the_limit_keeps_the_newest_and_never_the_stable_one_away() -> None:
    d, h = driver(), History()
    r = _many(h, d, 12)
    assert sorted(h.by_number()) == [2, *range(5, 15)]  # the newest 10, and stable revision 2
    limited = msgspec.structs.replace(r, spec=msgspec.structs.replace(r.spec, revision_history_limit=3))
    h.sync(limited, d.now + 100)
    assert sorted(h.by_number()) == [2, 12, 13, 14]
    # 0 keeps only what must stay: the stable revision and a running canary's
    running = with_status(limited, phase="Progressing", canary_revision=15, canary_version="v15")
    running = msgspec.structs.replace(running, spec=msgspec.structs.replace(r.spec, revision_history_limit=0))
    h.sync(running, d.now + 200)
    assert h.table() == [(15, "Active", "CanaryStarted", "v15"), (2, "Active", "Promoted", "v2")]


def test_the_limit_spares_what_an_unfinished_rollback_names() -> None:
    d, h = driver(), History()
    r = _many(h, d, 3)  # revisions 1..5, stable 2
    r = msgspec.structs.replace(r, spec=msgspec.structs.replace(r.spec, revision_history_limit=1))
    rb = RollbackStatus(phase="Restoring", trigger="Manual", from_revision=2, to_revision=1)
    h.sync(with_status(r, rollback=rb), d.now + 50)
    assert sorted(h.by_number()) == [1, 2, 5]
    h.sync(with_status(r, rollback=msgspec.structs.replace(rb, phase="Failed")), d.now + 60)
    assert sorted(h.by_number()) == [2, 5]


@pytest.mark.parametrize(("spec", "default", "want"), [(10, 10, 10), (10, 3, 3), (4, 3, 4), (0, 3, 0), (25, 3, 25)])
def test_history_limit_takes_the_config_default_for_the_specs_default(spec: int, default: int, want: int) -> None:
    assert history_limit(spec, default) == want


def test_the_config_default_applies_when_the_spec_has_the_fields_default() -> None:
    d, h = driver(), History()
    r = _many(h, d, 4)
    h.sync(r, d.now + 100, default_limit=2)
    assert sorted(h.by_number()) == [2, 5, 6]  # and 10 for a spec that asks for 10 with the default at 10


def test_a_deleted_rollout_takes_its_records_and_leaves_hand_made_ones() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now)
    by_hand = msgspec.structs.replace(
        h.by_number()[1], metadata=ObjectMeta(name="checkout-keep", namespace="shop", labels={})
    )
    h.records["checkout-keep"] = by_hand
    p = h.sync(None, d.now)
    assert p.deletes == ("checkout-1", "checkout-2") and list(h.records) == ["checkout-keep"]


def test_records_of_an_earlier_rollout_of_the_same_name_are_replaced() -> None:
    d, h = driver(), History()
    d.tick()
    h.sync(d.r, d.now)
    old = dict(h.records)
    d2 = driver()
    d2.r = msgspec.structs.replace(d2.r, metadata=msgspec.structs.replace(d2.r.metadata, uid="uid-2"))
    d2.now = d.now + 500
    d2.tick()
    p = h.sync(d2.r, d2.now)
    assert p.deletes == ("checkout-1", "checkout-2") and [w.create for w in p.writes] == [True, True]
    assert all(r.metadata.owner_references[0].uid == "uid-2" for r in h.records.values())
    assert h.by_number()[2].status.start_time == rfc3339(d2.now) != old["checkout-2"].status.start_time


def test_a_record_created_without_its_status_is_completed() -> None:
    """As after a crash between creating a record and writing its status (create stores an empty one)."""
    d, h = driver(), History()
    d.error_ratio = 0.05
    d.tick()
    follow(d, h, 200, until="RolledBack")
    two = h.records["checkout-2"]
    h.records["checkout-2"] = writes.created(two, now=d.now, uid="x")
    h.sync(d.r, d.now)
    assert h.records["checkout-2"].status.phase == "Failed" and h.records["checkout-2"].status.start_time


def test_long_rollout_names_give_valid_record_names() -> None:
    name = "a" * 60 + "-bc"
    assert revision_name(name, 7) == "a" * 60 + "-7" and len(revision_name(name, 12345)) == 63
    assert revision_name("web", 3) == "web-3"
    d, h = driver(), History()
    d.r = msgspec.structs.replace(d.r, metadata=msgspec.structs.replace(d.r.metadata, name=name))
    d.tick()
    h.sync(d.r, d.now)  # validated in sync()
    assert {r.spec.rollout for r in h.records.values()} == {name}
