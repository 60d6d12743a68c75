"""The health outbox as plain data: order per key, acknowledgements, forgetting, and the cap."""

from __future__ import annotations

import itertools

from tmcd.contracts.messages import HealthChange
from tmcd.health.outbox import Outbox, merge, msg_id

T0 = 1_764_160_000.0


def ev(name: str, before: str, after: str, at: float, kind: str = "cluster", reason: str = "X") -> HealthChange:
    return HealthChange(kind=kind, name=name, timestamp=at, from_status=before, to_status=after, reason=reason)  # type: ignore[arg-type]


def drain(box: Outbox, key: tuple[str, str]) -> list[tuple[str, str]]:
    """Acknowledge every event of ``key`` in order; return their (from, to)."""
    out = []
    while (p := box.head(key)) is not None:
        out.append((p.event.from_status, p.event.to_status))
        box.published(key, p)
    return out


def test_events_wait_in_order_per_key_until_acknowledged() -> None:
    box = Outbox()
    box.add(ev("a", "Unknown", "Healthy", T0))
    box.add(ev("b", "Unknown", "Healthy", T0))
    box.add(ev("a", "Healthy", "Unhealthy", T0 + 5))
    box.add(ev("eu", "Unknown", "Healthy", T0, kind="location"))
    assert box.keys() == [("cluster", "a"), ("cluster", "b"), ("location", "eu")]
    assert box.events == 4 and len(box) == 4
    head = box.head(("cluster", "a"))
    assert head is not None and head.event.to_status == "Healthy"
    # an acknowledgement for something that is not the head (a stale retry) changes nothing
    other = box.head(("cluster", "b"))
    assert other is not None
    box.published(("cluster", "a"), other)
    assert box.events == 4
    assert drain(box, ("cluster", "a")) == [("Unknown", "Healthy"), ("Healthy", "Unhealthy")]
    assert box.keys() == [("cluster", "b"), ("location", "eu")]
    assert drain(box, ("cluster", "b")) == [("Unknown", "Healthy")]
    assert drain(box, ("location", "eu")) == [("Unknown", "Healthy")]
    assert not box and box.keys() == []


def test_writes_are_one_flag_per_cluster() -> None:
    box = Outbox()
    for _ in range(3):
        box.persist("a")
    box.persist("b")
    assert len(box) == 2 and box.keys() == [("cluster", "a"), ("cluster", "b")]
    assert box.write_due("a")
    box.written("a")
    assert not box.write_due("a") and box.keys() == [("cluster", "b")]


def test_a_forgotten_cluster_is_deleted_only_after_all_its_events() -> None:
    box = Outbox()
    box.add(ev("a", "Healthy", "Unhealthy", T0))
    box.persist("a")
    box.forget(ev("a", "Unhealthy", "Unknown", T0 + 10, reason="Forgotten"))
    assert box.forgetting("a") and not box.write_due("a")  # nothing left to write: it goes
    box.persist("a")
    assert not box.write_due("a")
    assert not box.ready_to_delete("a")
    assert drain(box, ("cluster", "a")) == [("Healthy", "Unhealthy"), ("Unhealthy", "Unknown")]
    assert box.ready_to_delete("a") and box.keys() == [("cluster", "a")]
    box.deleted("a")
    assert not box and not box.forgetting("a")


def test_msg_id_is_stable_per_transition() -> None:
    a = ev("a", "Healthy", "Unhealthy", T0 + 0.125)
    assert msg_id(a) == msg_id(ev("a", "Healthy", "Unhealthy", T0 + 0.125))
    assert (
        len(
            {
                msg_id(a),
                msg_id(ev("a", "Healthy", "Unhealthy", T0 + 0.5)),
                msg_id(ev("b", "Healthy", "Unhealthy", T0 + 0.125)),
            }
        )
        == 3
    )


def test_merge_keeps_the_first_from_and_the_last_details() -> None:
    m = merge(ev("a", "Healthy", "Degraded", T0), ev("a", "Degraded", "Unhealthy", T0 + 5, reason="HeartbeatMissed"))
    assert m is not None and (m.from_status, m.to_status, m.timestamp, m.reason) == (
        "Healthy",
        "Unhealthy",
        T0 + 5,
        "HeartbeatMissed",
    )
    assert merge(ev("a", "Healthy", "Degraded", T0), ev("a", "Degraded", "Healthy", T0 + 5)) is None
    forgotten = merge(ev("a", "Unknown", "Healthy", T0), ev("a", "Healthy", "Unknown", T0 + 5, reason="Forgotten"))
    assert forgotten is not None and forgotten.reason == "Forgotten"


def test_over_the_cap_later_transitions_are_merged_and_the_chain_stays_whole() -> None:
    box = Outbox(cap=4)
    statuses = ["Healthy", "Degraded", "Unhealthy"]
    # a very long outage: 3 clusters flap through 50 transitions each
    for i in range(50):
        for name in ("a", "b", "c"):
            box.add(ev(name, statuses[i % 3], statuses[(i + 1) % 3], T0 + i))
    assert box.events <= 4 + 2 * 3
    assert box.coalesced > 0
    for name in ("a", "b", "c"):
        got = drain(box, ("cluster", name))
        assert got[0] == ("Healthy", "Degraded")  # what was queued first is never rewritten
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(got))  # no gap in the chain
        assert got[-1][1] == statuses[50 % 3]  # ends at the latest status
    assert not box


def test_over_the_cap_a_round_trip_is_dropped_and_forgotten_stays() -> None:
    box = Outbox(cap=1)
    box.add(ev("a", "Unknown", "Healthy", T0))
    box.add(ev("a", "Healthy", "Degraded", T0 + 1))
    box.add(ev("a", "Degraded", "Healthy", T0 + 2))  # back where the queued head left it: nothing to tell
    assert box.queued(("cluster", "a")) == [ev("a", "Unknown", "Healthy", T0)]
    box.add(ev("a", "Healthy", "Unhealthy", T0 + 3))
    box.forget(ev("a", "Unhealthy", "Unknown", T0 + 4, reason="Forgotten"))
    queued = box.queued(("cluster", "a"))
    assert [(e.from_status, e.to_status, e.reason) for e in queued] == [
        ("Unknown", "Healthy", "X"),
        ("Healthy", "Unknown", "Forgotten"),
    ]
