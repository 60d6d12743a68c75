"""What each action does to the canary images, and the records (pure: tmcd/canary/images.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from tests.test_canary_model import rollout
from tmcd.canary.images import ImageChanges, merge, plan, record
from tmcd.resources.canary import CanaryRollout, StepAction, WorkloadImage, WorkloadRef

OLD, NEW = "reg/web:1", "reg/web:2"


def with_images(*recs: WorkloadImage, image: str | None = NEW, container: str = "web", **status: Any) -> CanaryRollout:
    r = rollout([])
    ref = (
        WorkloadRef(name="checkout", container=container, canary_image=image) if image else WorkloadRef(name="checkout")
    )
    spec = msgspec.structs.replace(r.spec, workload_ref=ref)
    st = msgspec.structs.replace(r.status, phase="Progressing", workload_images=list(recs), **status)
    return msgspec.structs.replace(r, spec=spec, status=st)


def rec(cluster: str, image: str = NEW, previous: str = OLD, container: str = "web", **kw: Any) -> WorkloadImage:
    return WorkloadImage(
        cluster=cluster, deployment="checkout", container=container, image=image, previous=previous, **kw
    )


def test_the_actions_clusters_get_the_image_and_clusters_that_left_get_theirs_back() -> None:
    r = with_images(rec("c1"), rec("c2"))
    p = plan(r, StepAction(kind="clusters", clusters=["c3", "c1"]))
    assert (p.target, p.restore, p.drop) == (["c1", "c3"], [rec("c2")], [])
    assert plan(r, StepAction(kind="weight", weight=20, clusters=["c1", "c2"])).restore == []
    for kind in ("stable", "reset"):  # back to stable: every image back
        p = plan(r, StepAction(kind=kind))  # type: ignore[arg-type]
        assert (p.target, p.restore) == ([], [rec("c1"), rec("c2")])
    p = plan(r, StepAction(kind="finalize"))
    assert (p.target, p.restore, p.drop) == ([], [], [rec("c1"), rec("c2")])  # success: the images stay


def test_a_spec_without_the_image_or_with_another_container_puts_the_recorded_ones_back() -> None:
    p = plan(with_images(rec("c1"), image=None), StepAction(kind="weight", weight=20, clusters=["c1"]))
    assert (p.target, p.restore) == ([], [rec("c1")])
    p = plan(with_images(rec("c1"), container="app"), StepAction(kind="weight", weight=20, clusters=["c1"]))
    assert (p.target, p.restore) == (["c1"], [rec("c1")])


def test_the_rollback_engine_owns_a_rolling_back_rollout() -> None:
    r = with_images(rec("c1"))
    r = msgspec.structs.replace(r, status=msgspec.structs.replace(r.status, phase="RollingBack"))
    assert plan(r, StepAction(kind="clusters", clusters=["c2"])).empty


def test_a_record_keeps_the_image_from_before_the_rollout() -> None:
    assert record(with_images(), "c1", OLD) == rec("c1")
    assert record(with_images(rec("c1")), "c1", OLD) is None  # recorded, not set yet (a crash)
    assert record(with_images(rec("c1")), "c1", NEW) is None  # recorded and set
    # a new canaryImage: the previous image stays the one from before the rollout
    assert record(with_images(rec("c1"), image="reg/web:3"), "c1", NEW) == rec("c1", image="reg/web:3")
    # someone else's image since: that is what a rollback puts back now
    assert record(with_images(rec("c1")), "c1", "reg/web:hotfix") == rec("c1", previous="reg/web:hotfix")
    assert merge([rec("c2"), rec("c1")], [rec("c3"), rec("c1", image="x")]) == [
        rec("c1", image="x"),
        rec("c2"),
        rec("c3"),
    ]


def test_the_changes_in_words_and_evidence() -> None:
    r = with_images()
    back = [rec("c3", state="Restored"), rec("c4", state="Skipped", message="gone")]
    ch = ImageChanges([rec("c1")], set=[rec("c1"), rec("c2")], restored=back)
    assert ch.text(r) == (
        f"canary image {NEW} on c1, c2 (container web of Deployment shop/checkout); "
        f"image put back on c3 ({OLD}); image not put back on c4: gone"
    )
    assert ch.evidence() == {
        "images": {"c1": {"image": NEW, "previous": OLD}, "c2": {"image": NEW, "previous": OLD}},
        "restoredImages": {"c3": {"image": OLD, "state": "Restored"}, "c4": {"image": OLD, "state": "Skipped"}},
    }
    assert ImageChanges([], kept=[rec("c1")]).text(r) == f"canary image {NEW} stays on c1"
    assert ImageChanges([]).text(r) == "" and ImageChanges([]).evidence() == {}
