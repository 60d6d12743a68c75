"""The placement engine: eligibility reasons, policies, stickiness and the status/message it yields."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from tmcd.contracts.codec import encode
from tmcd.contracts.messages import PlacementDecision
from tmcd.placement import CandidateResult, Decision, decide, to_message, to_status
from tmcd.placement.model import (
    DEGRADED_PENALTY,
    STICKY_BONUS,
    UNHEALTHY_PENALTY,
    UNKNOWN_UTILISATION,
    eligibility_facts,
    fleet_change_matters,
    fleet_pass_at,
    needs_decision,
    status_change,
    touches,
    utilisation,
)
from tmcd.resources.meta import Condition, ObjectMeta
from tmcd.resources.placement import (
    LabelSelector,
    LabelSelectorRequirement,
    Placement,
    PlacementPolicy,
    PlacementSpec,
    PlacementStatus,
)
from tmcd.resources.selectors import SelectorError, from_label_selector
from tmcd.resources.synctarget import HealthStatus, SyncTarget, SyncTargetSpec, SyncTargetStatus

NOW = 1_700_000_000.0
MEM = 34359738368  # 32Gi


def cluster(
    name: str,
    region: str,
    zone: str,
    u: float,
    *,
    health: HealthStatus = "Healthy",
    connected: bool = True,
    paused: bool = False,
    cordoned: bool = False,
    labels: dict[str, str] | None = None,
) -> SyncTarget:
    """A SyncTarget with 8 cpu, 32Gi and 100 pods allocatable, each used at fraction ``u``."""
    return SyncTarget(
        metadata=ObjectMeta(name=name, labels={"region": region, "zone": zone, **(labels or {})}),
        spec=SyncTargetSpec(unschedulable=cordoned),
        status=SyncTargetStatus(
            capacity={"cpu": "8", "memory": "32Gi", "pods": "110"},
            allocatable={"cpu": "8", "memory": str(MEM), "pods": "100"},
            used={"cpu": f"{round(u * 8000)}m", "memory": str(round(u * MEM)), "pods": str(round(u * 100))},
            health=health,
            connected=connected,
            sync_paused=paused,
        ),
    )


def fleet() -> list[SyncTarget]:
    """Nine clusters in three regions, two zones each.

    LeastLoaded order: w2 .9, e1 .8, w3 .75 (Degraded), w1 .7, a3 .6, e2 .5, a1 .4, e3 .2, a2 .1
    """
    return [
        cluster("e1", "us-east", "us-east-1a", 0.20),
        cluster("e2", "us-east", "us-east-1b", 0.50),
        cluster("e3", "us-east", "us-east-1a", 0.80),
        cluster("w1", "eu-west", "eu-west-1a", 0.30),
        cluster("w2", "eu-west", "eu-west-1b", 0.10),
        cluster("w3", "eu-west", "eu-west-1a", 0.05, health="Degraded"),
        cluster("a1", "ap-south", "ap-south-1a", 0.60),
        cluster("a2", "ap-south", "ap-south-1b", 0.90),
        cluster("a3", "ap-south", "ap-south-1a", 0.40),
    ]


def placement(
    policy: PlacementPolicy = "LeastLoaded",
    n: int | None = None,
    *,
    selectors: list[LabelSelector] | None = None,
    tolerate: bool = False,
) -> Placement:
    return Placement(
        metadata=ObjectMeta(name="web"),
        spec=PlacementSpec(
            location_selectors=selectors or [], number_of_clusters=n, policy=policy, tolerate_unhealthy=tolerate
        ),
    )


def by_name(d: Decision) -> dict[str, CandidateResult]:
    return {c.cluster: c for c in d.candidates}


def reasons(d: Decision) -> dict[str, str]:
    return {c.cluster: c.reason for c in d.candidates}


def check_invariants(d: Decision, clusters: list[SyncTarget]) -> None:
    """Every cluster exactly once; selected consistent with candidates; scores in 0..1."""
    names = [c.cluster for c in d.candidates]
    assert Counter(names) == Counter({t.metadata.name for t in clusters})
    assert [c.cluster for c in d.candidates if c.selected] == d.selected
    for c in d.candidates:
        assert 0.0 <= c.score <= 1.0
        assert c.selected == (c.reason == "Selected")
        assert c.message


# --- policies --------------------------------------------------------------------------------


def test_least_loaded_picks_the_emptiest() -> None:
    f = fleet()
    d = decide(placement("LeastLoaded", 3), f, now=NOW)
    check_invariants(d, f)
    assert d.phase == "Bound"
    assert d.policy == "LeastLoaded"
    assert d.decided_at == NOW
    assert d.selected == ["w2", "e1", "w3"]
    assert [c.cluster for c in d.candidates] == ["w2", "e1", "w3", "w1", "a3", "e2", "a1", "e3", "a2"]
    scores = by_name(d)
    assert scores["w2"].score == pytest.approx(0.9)
    assert scores["w3"].score == pytest.approx(0.95 - DEGRADED_PENALTY)
    assert scores["a2"].score == pytest.approx(0.1)
    assert reasons(d) == {n: ("Selected" if n in ("w2", "e1", "w3") else "NotChosen") for n in scores}
    assert "numberOfClusters 3 already filled" in scores["w1"].message
    assert "Degraded" in scores["w3"].message


def test_binpack_fills_the_fullest() -> None:
    f = fleet()
    d = decide(placement("Binpack", 2), f, now=NOW)
    check_invariants(d, f)
    assert d.selected == ["a2", "e3"]
    assert [c.cluster for c in d.candidates] == ["a2", "e3", "a1", "e2", "a3", "w1", "e1", "w2", "w3"]
    scores = by_name(d)
    assert scores["a2"].score == pytest.approx(0.9)
    assert scores["w3"].score == 0.0  # 0.05 - 0.2, clamped
    assert scores["w3"].reason == "NotChosen"


def test_spread_one_per_region() -> None:
    f = fleet()
    d = decide(placement("Spread", 3), f, now=NOW)
    check_invariants(d, f)
    assert d.selected == ["w2", "e1", "a3"]
    regions = {t.metadata.name: t.metadata.labels["region"] for t in f}
    assert {regions[n] for n in d.selected} == {"us-east", "eu-west", "ap-south"}


def test_spread_full_order_round_robins_regions_then_zones() -> None:
    f = fleet()
    d = decide(placement("Spread"), f, now=NOW)
    check_invariants(d, f)
    # round 1: the best of each region; round 2: within a region the other zone comes before
    # the second cluster of the first zone (eu-west: w2 zone b, then w3 zone a, then w1).
    assert d.selected == ["w2", "e1", "a3", "w3", "e2", "a2", "w1", "a1", "e3"]
    scores = [c.score for c in d.candidates]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    # rank i of n gets (n - 1 - i + leastLoaded) / n
    assert scores[0] == pytest.approx((8 + 0.9) / 9, abs=1e-4)
    assert scores[-1] == pytest.approx((0 + 0.2) / 9, abs=1e-4)


def test_spread_six_takes_two_per_region() -> None:
    f = fleet()
    d = decide(placement("Spread", 6), f, now=NOW)
    regions = Counter(next(t for t in f if t.metadata.name == n).metadata.labels["region"] for n in d.selected)
    assert regions == {"us-east": 2, "eu-west": 2, "ap-south": 2}
    zones = {next(t for t in f if t.metadata.name == n).metadata.labels["zone"] for n in d.selected}
    assert len(zones) == 6  # and each region's two clusters are in different zones


def test_spread_unlabelled_clusters_share_a_location() -> None:
    f = [
        cluster("e1", "us-east", "z", 0.5),
        SyncTarget(metadata=ObjectMeta(name="x1"), status=fleet()[0].status),
        SyncTarget(metadata=ObjectMeta(name="x2"), status=fleet()[1].status),
    ]
    d = decide(placement("Spread", 2), f, now=NOW)
    assert d.selected == ["x1", "e1"]


def test_spread_falls_back_to_fewer_regions() -> None:
    f = [c for c in fleet() if c.metadata.labels["region"] == "us-east"]
    d = decide(placement("Spread", 2), f, now=NOW)
    assert d.selected == ["e1", "e2"]  # different zones first


def test_number_of_clusters_none_selects_all_eligible() -> None:
    f = [*fleet(), cluster("c1", "us-east", "us-east-1a", 0.1, cordoned=True)]
    d = decide(placement("LeastLoaded", None), f, now=NOW)
    check_invariants(d, f)
    assert len(d.selected) == 9
    assert reasons(d)["c1"] == "Cordoned"
    assert d.candidates[-1].cluster == "c1"


def test_number_of_clusters_larger_than_eligible() -> None:
    f = fleet()[:4]
    d = decide(placement("Binpack", 10), f, now=NOW)
    check_invariants(d, f)
    assert d.phase == "Bound"
    assert sorted(d.selected) == ["e1", "e2", "e3", "w1"]
    assert d.message == "selected 4 of 4 eligible clusters (4 known)"


def test_number_of_clusters_zero_selects_nothing() -> None:
    f = fleet()
    d = decide(placement("LeastLoaded", 0), f, now=NOW)
    check_invariants(d, f)
    assert d.phase == "Unbound"
    assert d.selected == []
    assert set(reasons(d).values()) == {"NotChosen"}


# --- eligibility ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "detail"),
    [
        ({"health": "Unhealthy"}, "health Unhealthy"),
        ({"health": "Unknown"}, "health Unknown"),
        ({"connected": False}, "disconnected"),
    ],
)
def test_unhealthy_unknown_disconnected_excluded(kw: dict[str, object], detail: str) -> None:
    f = [*fleet(), cluster("bad", "us-east", "us-east-1a", 0.0, **kw)]  # type: ignore[arg-type]
    d = decide(placement("LeastLoaded"), f, now=NOW)
    check_invariants(d, f)
    bad = by_name(d)["bad"]
    assert (bad.reason, bad.selected, bad.score) == ("Unhealthy", False, 0.0)
    assert detail in bad.message
    assert "bad" not in d.selected


@pytest.mark.parametrize("kw", [{"health": "Unhealthy"}, {"health": "Unknown"}, {"connected": False}])
def test_tolerate_unhealthy_makes_them_eligible_with_a_penalty(kw: dict[str, object]) -> None:
    f = [cluster("ok", "us-east", "a", 0.3), cluster("bad", "us-east", "a", 0.0, **kw)]  # type: ignore[arg-type]
    d = decide(placement("LeastLoaded", 1, tolerate=True), f, now=NOW)
    check_invariants(d, f)
    assert d.selected == ["ok"]  # 0.7 beats an empty but unhealthy cluster: 1.0 - 0.4
    assert reasons(d)["bad"] == "NotChosen"
    assert by_name(d)["bad"].score == pytest.approx(1.0 - UNHEALTHY_PENALTY)
    d_all = decide(placement("LeastLoaded", None, tolerate=True), f, now=NOW)
    assert sorted(d_all.selected) == ["bad", "ok"]


def test_degraded_is_eligible_but_ranked_below_an_equal_healthy_cluster() -> None:
    f = [cluster("deg", "r", "z", 0.3, health="Degraded"), cluster("hea", "r", "z", 0.3)]
    d = decide(placement("LeastLoaded", 1), f, now=NOW)
    assert d.selected == ["hea"]
    assert by_name(d)["deg"].reason == "NotChosen"
    assert by_name(d)["deg"].score == pytest.approx(0.7 - DEGRADED_PENALTY)


def test_cordoned_excluded() -> None:
    f = [*fleet(), cluster("cord", "eu-west", "eu-west-1a", 0.0, cordoned=True)]
    d = decide(placement("LeastLoaded", 1), f, now=NOW)
    check_invariants(d, f)
    assert by_name(d)["cord"].reason == "Cordoned"
    assert d.selected == ["w2"]


@pytest.mark.parametrize(
    ("used", "resource"),
    [
        ({"cpu": "8", "memory": "1Gi", "pods": "1"}, "cpu"),
        ({"cpu": "8000m", "memory": "1Gi", "pods": "1"}, "cpu"),
        ({"cpu": "1", "memory": "32Gi", "pods": "1"}, "memory"),
        ({"cpu": "1", "memory": "1Gi", "pods": "100"}, "pods"),
        ({"cpu": "1", "memory": "1Gi", "pods": "120"}, "pods"),
    ],
)
def test_full_clusters_excluded(used: dict[str, str], resource: str) -> None:
    full = cluster("full", "us-east", "us-east-1a", 0.0)
    full.status.used = used
    f = [*fleet(), full]
    d = decide(placement("Binpack"), f, now=NOW)
    check_invariants(d, f)
    c = by_name(d)["full"]
    assert c.reason == "InsufficientCapacity"
    assert c.message.startswith(resource)
    assert "full" not in d.selected


def test_zero_allocatable_is_full() -> None:
    t = cluster("z", "r", "z", 0.0)
    t.status.allocatable["pods"] = "0"
    t.status.used.pop("pods")
    d = decide(placement(), [t], now=NOW)
    assert reasons(d) == {"z": "InsufficientCapacity"}
    assert d.phase == "Unbound"


def test_unknown_or_bad_quantities_are_not_full() -> None:
    blank = SyncTarget(
        metadata=ObjectMeta(name="blank", labels={"region": "r"}), status=SyncTargetStatus(health="Healthy")
    )
    garbage = cluster("garbage", "r", "z", 0.0)
    garbage.status.allocatable = {"cpu": "lots", "memory": "?", "pods": "100"}
    garbage.status.used = {"cpu": "8", "memory": "1Gi", "pods": "many"}
    d = decide(placement("LeastLoaded"), [blank, garbage], now=NOW)
    assert sorted(d.selected) == ["blank", "garbage"]
    assert utilisation(blank) == UNKNOWN_UTILISATION
    assert utilisation(garbage) == UNKNOWN_UTILISATION  # pods used unparseable, cpu/memory allocatable too


def test_utilisation_mixes_units() -> None:
    t = cluster("t", "r", "z", 0.0)
    t.status.allocatable = {"cpu": "7500m", "memory": "32Gi", "pods": "110"}
    t.status.used = {"cpu": "3750m", "memory": str(8 * 2**30), "pods": "11"}
    assert utilisation(t) == pytest.approx((0.5 + 0.25 + 0.1) / 3)


def test_label_mismatch_with_ored_selectors() -> None:
    f = fleet()
    east = LabelSelector(match_labels={"region": "us-east"})
    west_b = LabelSelector(
        match_expressions=[
            LabelSelectorRequirement(key="region", operator="In", values=["eu-west"]),
            LabelSelectorRequirement(key="zone", operator="NotIn", values=["eu-west-1a"]),
        ]
    )
    d = decide(placement("LeastLoaded", selectors=[east, west_b]), f, now=NOW)
    check_invariants(d, f)
    assert d.selected == ["w2", "e1", "e2", "e3"]
    r = reasons(d)
    assert {n for n, why in r.items() if why == "LabelMismatch"} == {"w1", "w3", "a1", "a2", "a3"}
    assert "region=ap-south" in by_name(d)["a1"].message
    # ineligible clusters follow the ranked ones, by name
    assert [c.cluster for c in d.candidates[4:]] == ["a1", "a2", "a3", "w1", "w3"]


def test_label_mismatch_wins_over_other_reasons() -> None:
    t = cluster("x", "mars", "z", 1.0, health="Unhealthy", cordoned=True, paused=True)
    d = decide(placement(selectors=[LabelSelector(match_labels={"region": "earth"})]), [t], now=NOW)
    assert reasons(d) == {"x": "LabelMismatch"}


def test_reason_order_cordoned_before_unhealthy_before_paused_before_capacity() -> None:
    f = [
        cluster("c", "r", "z", 1.0, health="Unhealthy", cordoned=True, paused=True),
        cluster("u", "r", "z", 1.0, health="Unhealthy", paused=True),
        cluster("p", "r", "z", 1.0, paused=True),
        cluster("f", "r", "z", 1.0),
    ]
    d = decide(placement(), f, now=NOW)
    assert reasons(d) == {"c": "Cordoned", "u": "Unhealthy", "p": "SyncPaused", "f": "InsufficientCapacity"}
    assert d.phase == "Unbound"
    assert d.message == (
        "no cluster selected among 4 known, 1 Cordoned, 1 InsufficientCapacity, 1 SyncPaused, 1 Unhealthy"
    )


def test_sync_paused_not_chosen_anew_but_kept() -> None:
    f = [cluster("p", "r", "z", 0.1, paused=True), cluster("q", "r", "z", 0.5)]
    d = decide(placement("LeastLoaded", 1), f, now=NOW)
    assert d.selected == ["q"]
    assert reasons(d)["p"] == "SyncPaused"
    kept = decide(placement("LeastLoaded", 1), f, previous=["p"], now=NOW)
    assert kept.selected == ["p"]
    assert "sync paused" in by_name(kept)["p"].message


def test_no_clusters_is_pending() -> None:
    d = decide(placement("Spread", 3), [], now=NOW)
    assert (d.phase, d.selected, d.candidates) == ("Pending", [], [])
    assert d.message == "no clusters known"


def test_none_eligible_is_unbound() -> None:
    f = [cluster(f"c{i}", "r", "z", 0.1, health="Unhealthy") for i in range(3)]
    d = decide(placement("Spread"), f, now=NOW)
    check_invariants(d, f)
    assert d.phase == "Unbound"
    assert d.selected == []
    assert set(reasons(d).values()) == {"Unhealthy"}


# --- stickiness and determinism ----------------------------------------------------------------


def test_stickiness_keeps_the_previous_choice_when_scores_are_close() -> None:
    f = [cluster("new", "r", "z", 0.30), cluster("old", "r", "z", 0.33)]
    assert decide(placement("LeastLoaded", 1), f, now=NOW).selected == ["new"]
    d = decide(placement("LeastLoaded", 1), f, previous=["old"], now=NOW)
    assert d.selected == ["old"]
    assert by_name(d)["old"].score == pytest.approx(0.67 + STICKY_BONUS)
    assert "previously selected" in by_name(d)["old"].message


def test_stickiness_yields_to_a_clearly_better_cluster() -> None:
    f = [cluster("new", "r", "z", 0.10), cluster("old", "r", "z", 0.50)]
    assert decide(placement("LeastLoaded", 1), f, previous=["old"], now=NOW).selected == ["new"]


def test_stickiness_in_binpack_and_spread() -> None:
    f = [cluster("a", "r1", "z", 0.62), cluster("b", "r1", "z", 0.60), cluster("c", "r2", "z", 0.9)]
    assert decide(placement("Binpack", 1), f, now=NOW).selected == ["c"]
    assert decide(placement("Binpack", 2), f, now=NOW).selected == ["c", "a"]
    assert decide(placement("Binpack", 2), f, previous=["c", "b"], now=NOW).selected == ["c", "b"]
    # Spread, one per region: within r1, the least loaded (b) unless a was chosen before
    assert decide(placement("Spread", 2), f, now=NOW).selected == ["b", "c"]
    assert decide(placement("Spread", 2), f, previous=["a"], now=NOW).selected == ["a", "c"]


def test_previous_with_unknown_or_ineligible_clusters_is_ignored() -> None:
    f = fleet()
    base = decide(placement("LeastLoaded", 2), f, now=NOW)
    d = decide(placement("LeastLoaded", 2), f, previous=["gone", "nope"], now=NOW)
    assert d == base


def test_stickiness_does_not_keep_an_unhealthy_cluster() -> None:
    f = [cluster("old", "r", "z", 0.1, health="Unhealthy"), cluster("new", "r", "z", 0.9)]
    d = decide(placement("LeastLoaded", 1), f, previous=["old"], now=NOW)
    assert d.selected == ["new"]
    assert reasons(d)["old"] == "Unhealthy"


@pytest.mark.parametrize("policy", ["LeastLoaded", "Binpack", "Spread"])
def test_deterministic_regardless_of_input_order(policy: PlacementPolicy) -> None:
    f = [*fleet(), cluster("tie1", "us-east", "us-east-1b", 0.2), cluster("tie0", "us-east", "us-east-1b", 0.2)]
    first = decide(placement(policy, 4), f, previous=["a3"], now=NOW)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = f[:]
        rng.shuffle(shuffled)
        assert decide(placement(policy, 4), shuffled, previous=["a3"], now=NOW) == first
    check_invariants(first, f)


def test_ties_broken_by_name() -> None:
    f = [cluster(n, "r", "z", 0.5) for n in ("c", "a", "b")]
    for policy in ("LeastLoaded", "Binpack", "Spread"):
        assert decide(placement(policy, 2), f, now=NOW).selected == ["a", "b"]


def test_duplicate_names_count_once() -> None:
    f = [cluster("d", "r", "z", 0.1), cluster("d", "r", "z", 0.9, health="Unhealthy")]
    d = decide(placement(), f, now=NOW)
    assert [c.cluster for c in d.candidates] == ["d"]
    assert d.selected == ["d"]


def test_decide_does_not_modify_inputs() -> None:
    f = fleet()
    before = msgspec.json.encode(f)
    p = placement("Spread", 2)
    p_before = msgspec.json.encode(p)
    decide(p, f, previous=["e1"], now=NOW)
    assert msgspec.json.encode(f) == before
    assert msgspec.json.encode(p) == p_before


# --- errors ----------------------------------------------------------------------------------


def test_invalid_selector_raises() -> None:
    bad = LabelSelector(match_expressions=[LabelSelectorRequirement(key="region", operator="In", values=[])])
    with pytest.raises(SelectorError, match="needs at least one value"):
        decide(placement(selectors=[bad]), fleet(), now=NOW)


def test_unknown_policy_raises() -> None:
    p = placement()
    p.spec.policy = "Random"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown placement policy 'Random'"):
        decide(p, fleet(), now=NOW)


# --- message and status ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clusters", "result"),
    [(fleet(), "bound"), ([cluster("x", "r", "z", 1.0)], "unbound"), ([], "pending")],
)
def test_to_message(clusters: list[SyncTarget], result: str) -> None:
    d = decide(placement("Spread", 2), clusters, now=NOW)
    msg = to_message(d, "web", 0.0123, "simulation")
    assert msg.result == result
    assert msg.placement == "web"
    assert msg.timestamp == NOW
    assert msg.latency_seconds == 0.0123
    assert msg.decided_by == "simulation"
    assert msg.selected == d.selected
    assert [(c.cluster, c.selected, c.score, c.reason) for c in msg.candidates] == [
        (c.cluster, c.selected, c.score, c.reason) for c in d.candidates
    ]
    again = msgspec.json.decode(encode(msg), type=PlacementDecision)
    assert again == msg


def test_to_message_default_decider_and_negative_latency() -> None:
    msg = to_message(decide(placement(), fleet(), now=NOW), "web", -1.0)
    assert msg.decided_by == "scheduler"
    assert msg.latency_seconds == 0.0


def test_to_status() -> None:
    f = [*fleet(), cluster("cord", "r", "z", 0.0, cordoned=True)]
    d = decide(placement("LeastLoaded", 2), f, now=NOW)
    st = to_status(d, NOW + 1, observed_generation=3)
    assert st.phase == "Bound"
    assert [(s.cluster, s.reason) for s in st.selected_clusters] == [("w2", "Selected"), ("e1", "Selected")]
    assert st.selected_clusters[0].score == pytest.approx(0.9)
    assert len(st.candidates) == 10
    assert {c.cluster: c.reason for c in st.candidates}["cord"] == "Cordoned"
    assert st.last_decision_time == "2023-11-14T22:13:21Z"
    assert st.observed_generation == 3
    raw = msgspec.json.encode(st)
    assert b'"selectedClusters"' in raw and b'"lastDecisionTime"' in raw
    assert msgspec.json.decode(raw, type=PlacementStatus) == st


def test_to_status_pending() -> None:
    st = to_status(decide(placement(), [], now=NOW), NOW)
    assert (st.phase, st.selected_clusters, st.candidates) == ("Pending", [], [])


# --- re-deciding: which fleet changes matter, and which outcomes are worth an event -------------------


def test_needs_decision_for_a_new_or_changed_spec_only() -> None:
    p = placement()
    p.metadata.generation = 1
    assert needs_decision(p)  # never decided
    p.status = to_status(decide(p, fleet(), now=NOW), NOW, observed_generation=1)
    assert not needs_decision(p)
    p.metadata.generation = 2
    assert needs_decision(p)
    p.metadata.generation, p.status.last_decision_time = 1, ""
    assert needs_decision(p)  # a status nobody decided (written past the API)


def _beat(t: SyncTarget) -> SyncTarget:
    """The same cluster after another heartbeat: more load, newer times, another queue depth."""
    st = msgspec.structs.replace(
        t.status,
        used={"cpu": "7", "memory": "1Gi", "pods": "99"},
        last_syncer_heartbeat_time="2025-01-15T10:00:20Z",
        queue_depth=t.status.queue_depth + 40,
        error_ratio=0.01,
        synced_resources=["deployments.apps"],
    )
    return msgspec.structs.replace(t, status=st)


def test_heartbeats_alone_do_not_matter() -> None:
    t = cluster("a", "eu", "eu-1", 0.3)
    assert not fleet_change_matters(t, _beat(t))
    assert not fleet_change_matters(t, t)
    assert not fleet_change_matters(None, None)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: msgspec.structs.replace(t, spec=SyncTargetSpec(unschedulable=True)),
        lambda t: msgspec.structs.replace(t, status=msgspec.structs.replace(t.status, health="Unhealthy")),
        lambda t: msgspec.structs.replace(t, status=msgspec.structs.replace(t.status, health="Degraded")),
        lambda t: msgspec.structs.replace(t, status=msgspec.structs.replace(t.status, connected=False)),
        lambda t: msgspec.structs.replace(t, status=msgspec.structs.replace(t.status, sync_paused=True)),
        lambda t: msgspec.structs.replace(t, status=msgspec.structs.replace(t.status, used={"pods": "100"})),
        lambda t: msgspec.structs.replace(
            t, metadata=msgspec.structs.replace(t.metadata, labels={**t.metadata.labels, "tier": "gold"})
        ),
    ],
    ids=["cordoned", "unhealthy", "degraded", "disconnected", "paused", "full", "labels"],
)
def test_eligibility_changes_matter(change: object) -> None:
    t = cluster("a", "eu", "eu-1", 0.3)
    after = change(t)  # type: ignore[operator]
    assert fleet_change_matters(t, after) and fleet_change_matters(after, t)
    assert eligibility_facts(t) != eligibility_facts(after)


def test_appearing_and_vanishing_clusters_matter() -> None:
    t = cluster("a", "eu", "eu-1", 0.3)
    assert fleet_change_matters(None, t) and fleet_change_matters(t, None)


def test_touches_clusters_matching_before_or_after() -> None:
    eu = [from_label_selector(LabelSelector(match_labels={"region": "eu"}))]
    a_eu, a_us, b_us = cluster("a", "eu", "z", 0.1), cluster("a", "us", "z", 0.1), cluster("b", "us", "z", 0.1)
    assert touches(eu, a_eu, a_us) and touches(eu, a_us, a_eu)  # left or joined the selection's labels
    assert touches(eu, None, a_eu) and touches(eu, a_eu, None)
    assert not touches(eu, a_us, b_us) and not touches(eu, None, b_us)
    assert touches([], None, b_us)  # no selectors: every cluster


def test_status_change_is_an_event_only_when_the_selection_or_phase_moves() -> None:
    p = placement("LeastLoaded", 2)
    first = decide(p, fleet(), now=NOW)
    status = to_status(first, NOW)
    # scores and ranks move with load: nothing to write
    busier = [_beat(t) if t.metadata.name == "e2" else t for t in fleet()]
    assert status_change(status, decide(p, busier, previous=first.selected, now=NOW + 5)) == "none"
    # a cluster outside the selection turns Unhealthy: refresh the status quietly
    sick = [
        msgspec.structs.replace(t, status=msgspec.structs.replace(t.status, health="Unhealthy"))
        if t.metadata.name == "a2"
        else t
        for t in fleet()
    ]
    assert status_change(status, decide(p, sick, previous=first.selected, now=NOW + 5)) == "status"
    # a selected cluster is cordoned: a new decision
    cordoned = [
        cluster("w2", "eu-west", "eu-west-1b", 0.1, cordoned=True),
        *(t for t in fleet() if t.metadata.name != "w2"),
    ]
    assert status_change(status, decide(p, cordoned, previous=first.selected, now=NOW + 5)) == "decision"
    # the phase moves though nothing is selected either way (Pending -> Unbound): a new decision too
    pending = to_status(decide(p, [], now=NOW), NOW)
    only_sick = [t for t in sick if t.metadata.name == "a2"]
    assert status_change(pending, decide(p, only_sick, now=NOW)) == "decision"


def test_fleet_pass_at_leading_then_one_per_interval() -> None:
    assert fleet_pass_at(None, NOW, 1.0) == NOW  # the first change after a quiet spell: at once
    assert fleet_pass_at(NOW, NOW + 0.2, 1.0) == NOW + 1.0  # within the interval: at its end
    assert fleet_pass_at(NOW, NOW + 5.0, 1.0) == NOW + 5.0  # long after: at once


def test_status_carries_the_scheduled_condition() -> None:
    d = decide(placement("LeastLoaded", 2), fleet(), now=NOW)
    st = to_status(d, NOW, observed_generation=1)
    [cond] = st.conditions
    assert (cond.type, cond.status, cond.reason) == ("Scheduled", "True", "Bound")
    assert cond.message == "selected 2 of 9 candidates" and cond.last_transition_time == "2023-11-14T22:13:20Z"
    # decided again later with the same outcome: the transition time stays; other conditions stay
    other = Condition(type="Custom", status="True", reason="X", last_transition_time="2020-01-01T00:00:00Z")
    again = to_status(d, NOW + 60, observed_generation=1, previous=[other, cond])
    assert [c.type for c in again.conditions] == ["Custom", "Scheduled"]
    assert again.conditions[1].last_transition_time == cond.last_transition_time
    # nothing matches: False/Unbound, saying why, with a new transition time
    p = placement("Spread")
    p.spec.location_selectors = [LabelSelector(match_labels={"region": "mars"})]
    unbound = to_status(decide(p, fleet(), now=NOW), NOW + 120, previous=again.conditions)
    sched = unbound.conditions[-1]
    assert (sched.status, sched.reason) == ("False", "Unbound")
    assert sched.message == "selected 0 of 9 candidates; not chosen: 9 LabelMismatch"
    assert sched.last_transition_time == "2023-11-14T22:15:20Z"
