"""The watch cache's index (pure): pages, selections, the event window and what a watcher sees."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tmcd.api.index import ADDED, DELETED, MODIFIED, EventRing, Expired, Filter, KindIndex
from tmcd.resources.examples import example
from tmcd.resources.kinds import ANALYSIS_TEMPLATE, SYNC_TARGET
from tmcd.resources.selectors import parse_selector


def cluster(name: str, **labels: str) -> Any:
    obj: Any = example("SyncTarget")
    obj.metadata.name, obj.metadata.labels = name, dict(labels)
    return obj


def template(namespace: str, name: str) -> Any:
    obj: Any = example("AnalysisTemplate")
    obj.metadata.namespace, obj.metadata.name = namespace, name
    return obj


def names(entries: list[Any]) -> list[str]:
    return [e.object.metadata.name for e in entries]


def test_pages_walk_every_object_once_in_key_order() -> None:
    index = KindIndex(SYNC_TARGET)
    for rev, n in enumerate(["c", "a", "e", "b", "d"], start=1):
        index.apply(n, cluster(n), rev)
    seen, token = [], ""
    while True:
        page, token = index.page(Filter(), limit=2, continue_token=token)
        seen += names(page)
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    everything, last = index.page(Filter())
    assert names(everything) == seen and last == ""
    # the token is the last key: an object added behind the reader is not seen twice, one ahead is seen
    first, token = index.page(Filter(), limit=2)
    index.apply("aa", cluster("aa"), 6)
    index.apply("f", cluster("f"), 7)
    rest, _ = index.page(Filter(), continue_token=token)
    assert names(first) + names(rest) == ["a", "b", "c", "d", "e", "f"]


def test_each_object_carries_its_revision_and_its_json() -> None:
    index = KindIndex(SYNC_TARGET)
    index.apply("a", cluster("a"), 3)
    index.apply("a", cluster("a", tier="gold"), 9)
    entry = index.get("a")
    assert entry is not None and entry.object.metadata.resource_version == "9"
    assert json.loads(bytes(entry.raw)) == msgspec.to_builtins(entry.object)
    assert index.revision == 9 and index.get("b") is None
    assert index.apply("a", cluster("a"), 9) is None  # a resumed feed's overlap changes nothing


def test_selection_by_namespace_name_and_labels() -> None:
    index = KindIndex(ANALYSIS_TEMPLATE)
    rev = 0
    # by namespace, then name: all of "a" before "a-b" (its keys "a.x" sort after "a-b.x" as strings)
    for ns in ("a", "a-b", "ab"):
        for n in ("x", "y"):
            rev += 1
            index.apply(f"{ns}.{n}", template(ns, n), rev)
    assert [(e.namespace, e.name) for e in index.select(Filter(namespace="a"))] == [("a", "x"), ("a", "y")]
    assert [e.namespace for e in index.select(Filter(name="y"))] == ["a", "a-b", "ab"]
    page, token = index.page(Filter(namespace="a-b"), limit=1)
    assert names(page) == ["x"] and names(index.page(Filter(namespace="a-b"), continue_token=token)[0]) == ["y"]
    clusters = KindIndex(SYNC_TARGET)
    for rev, (n, tier) in enumerate([("a", "gold"), ("b", "silver"), ("c", "gold")], start=1):
        clusters.apply(n, cluster(n, tier=tier), rev)
    gold = Filter(selector=parse_selector("tier=gold"))
    assert names(clusters.select(gold)) == ["a", "c"]
    page, token = clusters.page(gold, limit=1)
    assert names(page) == ["a"] and names(clusters.page(gold, continue_token=token)[0]) == ["c"]


def test_keys_that_are_not_objects_and_values_that_do_not_decode() -> None:
    index = KindIndex(ANALYSIS_TEMPLATE)
    assert index.apply("no-namespace", template("x", "y"), 1) is None  # written by hand: not served
    assert index.revision == 1 and len(index) == 0
    index.apply("shop.t", template("shop", "t"), 2)
    gone = index.apply("shop.t", None, 3, invalid=True)  # overwritten with garbage: it leaves the lists
    assert gone is not None and gone.type == DELETED and index.unreadable("shop.t") and len(index) == 0
    back = index.apply("shop.t", template("shop", "t"), 4)
    assert back is not None and back.type == ADDED and not index.unreadable("shop.t")


def test_watchers_see_objects_enter_and_leave_their_selection() -> None:
    index = KindIndex(SYNC_TARGET)
    gold = Filter(selector=parse_selector("tier=gold"))
    start = index.ring.end
    index.apply("a", cluster("a", tier="silver"), 1)  # not selected
    index.apply("a", cluster("a", tier="gold"), 2)  # enters: ADDED
    index.apply("a", cluster("a", tier="gold", x="y"), 3)  # stays: MODIFIED
    index.apply("a", cluster("a", tier="silver"), 4)  # leaves: DELETED
    index.apply("b", cluster("b", tier="gold"), 5)
    index.apply("b", None, 6)  # deleted
    seen, end = index.changes(gold, start)
    assert [(t, o.metadata.name, o.metadata.resource_version) for t, o, _ in seen] == [
        (ADDED, "a", "2"),
        (MODIFIED, "a", "3"),
        (DELETED, "a", "4"),
        (ADDED, "b", "5"),
        (DELETED, "b", "6"),
    ]
    assert end == index.ring.end and index.changes(gold, end) == ([], end)
    everything, _ = index.changes(Filter(), start)
    assert [t for t, _, _ in everything] == [ADDED, MODIFIED, MODIFIED, MODIFIED, ADDED, DELETED]
    deleted = everything[-1]
    assert deleted[1].metadata.name == "b" and json.loads(bytes(deleted[2]))["metadata"]["resourceVersion"] == "6"


def test_a_deletion_the_index_did_not_see_the_object_of_is_still_an_event() -> None:
    index = KindIndex(ANALYSIS_TEMPLATE)
    event = index.apply("shop.t", None, 5)  # its earlier revisions were compacted away before loading
    assert event is not None and event.type == DELETED
    assert (event.object.metadata.namespace, event.object.metadata.name) == ("shop", "t")


def test_the_window_bounds_how_far_back_a_watch_can_resume() -> None:
    index = KindIndex(SYNC_TARGET, window=3)
    for rev in range(1, 6):
        index.apply(f"c{rev}", cluster(f"c{rev}"), rev * 10)
    assert index.floor == 20  # events 30, 40, 50 are held
    with pytest.raises(Expired, match="too old resource version: 19"):
        index.resume(19)
    seen, _ = index.changes(Filter(), index.resume(20))
    assert [o.metadata.name for _, o, _ in seen] == ["c3", "c4", "c5"]
    seen, _ = index.changes(Filter(), index.resume(35))
    assert [o.metadata.name for _, o, _ in seen] == ["c4", "c5"]
    number = index.resume(50)
    assert index.changes(Filter(), number) == ([], number)
    # a watcher that falls more than the window behind is told so
    behind = index.resume(20)
    for rev in range(6, 9):
        index.apply(f"c{rev}", cluster(f"c{rev}"), rev * 10)
    with pytest.raises(Expired, match="fell more than 3 events behind"):
        index.changes(Filter(), behind)


def test_the_ring_numbers_its_events_and_finds_a_revision() -> None:
    ring = EventRing(4)
    index = KindIndex(SYNC_TARGET)
    events = [index.apply(f"c{i}", cluster(f"c{i}"), i * 2) for i in range(1, 7)]
    for event in events:
        assert event is not None
        ring.append(event)
    assert (ring.start, ring.end, ring.size) == (2, 6, 4)
    assert ring.get(2).revision == 6 and ring.get(5).revision == 12
    assert ring.after(6) == 3 and ring.after(7) == 3 and ring.after(12) == 6 and ring.after(0) == 2
