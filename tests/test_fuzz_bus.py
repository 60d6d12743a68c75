"""Property-based tests of tmcd's NATS side: random and mutated messages of every type, on random
subjects and with random headers, published into a real daemon's streams and request subjects,
interleaved with valid messages.

For every example Hypothesis draws (a handful of messages), tmcd must: keep running (no agent
restarts, still connected); count every message its codec refuses in tmc_events_invalid_total with
the codec's kind and reason and copy it once to ``tmc.dead.<subject>`` (every count has its dead
letter); answer a malformed request with a ControlReply code 400, any request below 500; and
process every valid message (tmc_events_processed_total, and its effect in the metrics).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats import errors as nats_errors

from tests.fuzz.live import LiveTmcd, live_tmcd
from tests.fuzz.mutations import Mutation, mutations, token_text
from tests.helpers import wait_for
from tmcd.contracts import subjects as s
from tmcd.contracts.codec import InvalidMessage, decode, decode_as
from tmcd.contracts.examples import EXAMPLES, example_params
from tmcd.contracts.messages import ControlReply, HealthReport, SyncEventBatch

CONSUMED = (s.SYNCER_HEARTBEAT, s.SYNCER_SYNC, s.SYNCER_BATCH, s.SYNCER_CONN, s.PLACEMENT_DECISION, s.WORKLOAD_STATS)
"""Channels of the streams the metrics agent consumes as their primary consumer."""
REQUESTS = (s.CTL_CANARY, s.CTL_ROLLBACK, s.API_HEALTH)
"""Request subjects tmcd answers."""
EFFECT = {
    "syncer.heartbeat": ("tmc_syncer_queue_depth", "cluster"),
    "syncer.sync": ("tmc_syncer_resources_synced_total", "cluster"),
    "syncer.batch": ("tmc_syncer_resources_synced_total", "cluster"),
    "syncer.conn": ("tmc_connection_last_change_timestamp_seconds", "cluster"),
    "placement.decision": ("tmc_placement_decisions_total", "placement"),
    "workload.stats": ("tmc_workload_requests_total", "cluster"),
}
"""What a valid message of a consumed channel shows in the metrics, by the label that holds its name."""
MAX_EXAMPLES = 60
_ids = itertools.count(1)

garbage = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
headers = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "Nats-Msg-Id": garbage,  # made unique below: JetStream drops a repeated id as a duplicate
        "traceparent": garbage | st.just("00-" + "f" * 32 + "-" + "f" * 16 + "-01"),
        "tracestate": garbage,
        "X-Big": st.sampled_from([1_000, 60_000]).map(lambda n: "h" * n),
        "X-Unicode": garbage,
        "Status": st.sampled_from(["100", "404", "408", "409", "503", ""]),
    },
)


@dataclass(frozen=True)
class Plan:
    """One message as drawn: its channel, how it is broken (if at all), its subject token, its headers."""

    channel: s.Channel
    mutation: Mutation
    token: str | None
    headers: dict[str, str] | None

    @property
    def valid(self) -> bool:
        return self.mutation.what == "none" and self.token is None


plans = st.one_of(
    st.builds(Plan, st.sampled_from(s.CHANNELS), st.just(Mutation("none")), st.none(), headers),
    st.builds(Plan, st.sampled_from(s.CHANNELS), mutations, st.none() | token_text, headers),
    st.builds(Plan, st.sampled_from(s.CHANNELS), st.just(Mutation("none")), token_text, st.none()),
)


@dataclass
class Case:
    """A plan made concrete: names of its own, the bytes sent, and what tmcd's codec says of them."""

    plan: Plan
    name: str
    subject: str
    payload: bytes
    headers: dict[str, str] | None
    invalid: InvalidMessage | None
    events: int = 1
    published: bool = False
    reply: bytes = b""

    @property
    def dead(self) -> str:
        return s.dead_letter_subject(self.subject)


def make(plan: Plan) -> Case:
    """Give the plan's message fresh names (so its subject and metrics series are its own) and a current time."""
    ch, n = plan.channel, next(_ids)
    name = f"fz-{n}"
    data: dict[str, Any] = msgspec.to_builtins(EXAMPLES[ch.message])
    params = example_params(ch)
    free = [p for p in ch.params if p not in ch.enums]
    if free:
        params[free[0]] = name
        data[ch.bind[free[0]]] = name
    if isinstance(EXAMPLES[ch.message], SyncEventBatch):
        for ev in data["events"]:
            ev["cluster"] = name
    if "timestamp" in data:
        data["timestamp"] = time.time()
    if plan.token is not None and free:
        params[free[0]] = f"{plan.token}-{n}"
    subject = ch.template.format(**params)
    payload = plan.mutation.apply(data)
    hdrs = dict(plan.headers) if plan.headers is not None else None
    if hdrs is not None and "Nats-Msg-Id" in hdrs:
        hdrs["Nats-Msg-Id"] += f"-{n}"
    # what the daemon's decode will say: consumers decode by subject, subscriptions and services by channel
    try:
        msg = decode(subject, payload, ch if ch in REQUESTS or ch is s.HEALTH_CHANGE else None)
        invalid = None
    except InvalidMessage as err:
        invalid, msg = err, None
    events = len(msg.events) if isinstance(msg, SyncEventBatch) else 1
    return Case(plan, name, subject, payload, hdrs, invalid, events)


async def publish(live: LiveTmcd, case: Case) -> int:
    """Send one case: into its stream (returns the stream sequence), as a request (keeps the reply), or plain."""
    ch, nc = case.plan.channel, live.nc
    try:
        if ch in REQUESTS:
            try:
                reply = await nc.request(case.subject, case.payload, timeout=10, headers=case.headers)
            except nats_errors.NoRespondersError:
                leaders = [line for line in (await live.metrics()).splitlines() if line.startswith("tmc_leader")]
                raise AssertionError(f"nobody answers {case.subject!r}: {leaders}") from None
            case.reply = reply.data
        elif ch.stream is not None:
            ack = await nc.jetstream().publish(case.subject, case.payload, timeout=10, headers=case.headers)
            case.published = not ack.duplicate
            return int(ack.seq) if case.published else 0
        else:
            await nc.publish(case.subject, case.payload, headers=case.headers)
    except nats_errors.MaxPayloadError:
        return 0  # more than the server takes: it never reaches tmcd
    case.published = True
    return 0


async def dead_counts(live: LiveTmcd) -> Counter[str]:
    """Messages per subject in TMC_DEAD."""
    info = await live.nc.jetstream().stream_info(s.STREAM_DEAD, subjects_filter=">")
    return Counter(info.state.subjects or {})


async def caught_up(live: LiveTmcd, last: dict[str, int]) -> bool:
    """Every consumer of the daemon's on a stream has acked up to the last sequence published there."""
    js = live.nc.jetstream()
    for stream, seq in last.items():
        for info in await js.consumers_info(stream):
            if info.name.startswith(live.prefix) and info.ack_floor.stream_seq < seq:
                return False
    return True


def invalid_by_label(text: str) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("tmc_events_invalid_total{"):
            series, _, value = line.rpartition(" ")
            labels = dict(kv.split("=", 1) for kv in series[series.index("{") + 1 : -1].split(","))
            out[(labels["kind"].strip('"'), labels["reason"].strip('"'))] = int(float(value))
    return out


async def exercise(live: LiveTmcd, cases: list[Case]) -> None:
    """Publish the cases, wait until tmcd has handled them, check every outcome."""
    before, dead_before = await live.metrics(), await dead_counts(live)
    last: dict[str, int] = {}
    for case in cases:
        seq = await publish(live, case)
        if seq and case.plan.channel in CONSUMED:
            stream = case.plan.channel.stream
            assert stream is not None
            last[stream] = max(last.get(stream, 0), seq)
    await wait_for(lambda: caught_up(live, last), timeout=30, what="the consumers to ack what was published")
    core = [c for c in cases if c.plan.channel is s.HEALTH_CHANGE and c.invalid is not None and c.published]

    async def dead_lettered() -> bool:  # every count has its copy in TMC_DEAD, and every core message its count
        dead = await dead_counts(live)
        added = sum((dead - dead_before).values())
        counted = sum((invalid_by_label(await live.metrics()) - invalid_by_label(before)).values())
        return added == counted and all(dead[c.dead] > dead_before[c.dead] for c in core)

    await wait_for(dead_lettered, timeout=30, what="dead letters for every invalid message")
    after, dead = await live.metrics(), await dead_counts(live)
    assert live.restarts(after) == 0, "an agent crashed"
    assert live.connected(after)
    counted = invalid_by_label(after) - invalid_by_label(before)
    expected: Counter[tuple[str, str]] = Counter()
    letters: Counter[str] = Counter()
    processed: Counter[str] = Counter()
    floor: Counter[str] = Counter()
    for c in cases:
        ch, dl = c.plan.channel, dead[c.dead] - dead_before[c.dead]
        if c.published and c.invalid is not None and (ch in CONSUMED or ch in REQUESTS):
            expected[(c.invalid.kind, c.invalid.reason)] += 1
            letters[c.dead] += 1
        if ch in CONSUMED and c.published:
            assert ch.stream is not None
            if c.invalid is None:
                processed[ch.stream] += c.events
                floor[ch.stream] += c.events if dl == 0 else 0
            if c.plan.valid:
                assert dl == 0, f"the valid {ch.id} on {c.subject} was dead-lettered"
                metric, label = EFFECT[ch.id]
                assert live.total(after, metric, **{label: c.name}) > 0, f"{c.subject}: no {metric}"
        elif ch in REQUESTS and c.published:
            check_reply(c)
    for subject, n in letters.items():
        assert dead[subject] - dead_before[subject] == n, f"{subject!r}: {n} invalid, dead-lettered {dead[subject]}"
    for (kind, reason), n in expected.items():
        assert counted[(kind, reason)] >= n, f"tmc_events_invalid_total{{{kind},{reason}}} +{counted[(kind, reason)]}"
    if not core:  # health changes have two subscribers, each counting; the rest are counted exactly once
        assert +(counted - Counter({k: v for k, v in counted.items() if k[1] == "handler_error"})) == +expected
    for stream, n in processed.items():
        got = live.total(after, "tmc_events_processed_total", stream=stream) - live.total(
            before, "tmc_events_processed_total", stream=stream
        )
        assert floor[stream] <= got <= n, f"{stream}: {got} processed, expected {floor[stream]}..{n}"


def check_reply(c: Case) -> None:
    """A malformed request: a 400 ControlReply; a valid one: an answer below 500."""
    if c.invalid is not None:
        reply = decode_as(ControlReply, c.reply)
        assert reply.code == 400 and not reply.ok and c.invalid.reason in reply.message, reply
    elif c.plan.channel is s.API_HEALTH:
        decode_as(HealthReport, c.reply)
    else:
        assert decode_as(ControlReply, c.reply).code < 500, c.reply


@pytest.fixture(scope="module")
def live(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTmcd]:
    with live_tmcd(nats_server_bin, tmp_path_factory.mktemp("fuzz-bus")) as t:
        yield t


@pytest.mark.timeout(300)
def test_random_and_mutated_messages_are_counted_dead_lettered_and_never_crash_tmcd(live: LiveTmcd) -> None:
    @given(st.lists(plans, min_size=1, max_size=6))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    def run(drawn: list[Plan]) -> None:
        live.run(exercise(live, [make(p) for p in drawn]))

    run()
    assert live.restarts(live.metrics_now()) == 0


def test_every_channel_valid_then_broken_in_every_way(live: LiveTmcd) -> None:
    """Deterministic: each channel's example, and each way of breaking it once, interleaved."""
    cases = []
    for i, ch in enumerate(s.CHANNELS):
        cases.append(make(Plan(ch, Mutation("none"), None, None)))
        for what, arg in (("drop", None), ("raw", b"NaN"), ("deep", (3000, "[")), ("raw", b'"\xff\xfe"'),
                          ("number", -1), ("schema", 2), ("truncate", 0.5), ("othertype", i % 17)):  # fmt: skip
            cases.append(make(Plan(ch, Mutation(what, i, arg), None, {"traceparent": "garbage"})))
        cases.append(make(Plan(ch, Mutation("none"), "*", None)))
        cases.append(make(Plan(ch, Mutation("none"), None, {"Nats-Msg-Id": "\u00e9", "X-Big": "h" * 60_000})))
    live.run(exercise(live, cases))


def test_a_timestamp_past_year_9999_is_invalid_not_a_crash(live: LiveTmcd) -> None:
    """A heartbeat from the year 33658 was accepted, and the health agent crashed writing it down as
    the SyncTarget's lastSyncerHeartbeatTime (and again after each restart, for every such heartbeat)."""
    cases = []
    for ch in (s.SYNCER_HEARTBEAT, s.SYNCER_CONN, s.SYNCER_SYNC):
        cases += [make(Plan(ch, Mutation("set", 0, ("timestamp", ts)), None, None)) for ts in (1e12, 1e308)]
        cases.append(make(Plan(ch, Mutation("none"), None, None)))
    assert all(c.invalid is not None and c.invalid.reason == "invalid_fields" for c in cases if not c.plan.valid)
    live.run(exercise(live, cases))


def test_a_status_header_is_not_taken_for_a_status(live: LiveTmcd) -> None:
    """An empty payload with a ``Status`` header looks like JetStream's own status messages (404, 408,
    ...), which carry no reply subject: a stored one does, and is invalid like any empty payload."""
    cases = [
        make(Plan(s.SYNCER_SYNC, Mutation("bytes", 0, b""), None, {"Status": status}))
        for status in ("404", "408", "409", "100")
    ]
    cases.append(make(Plan(s.SYNCER_SYNC, Mutation("none"), None, None)))
    # a request's headers are not copied into tmcd's reply: an echoed `Status: 503` reads as "no responders"
    cases += [make(Plan(ch, Mutation("none"), None, {"Status": "503"})) for ch in REQUESTS]
    cases += [make(Plan(ch, Mutation("drop", 0), None, {"Status": "503"})) for ch in REQUESTS]
    live.run(exercise(live, cases))


def test_a_subject_as_long_as_a_publisher_can_send_does_not_cost_tmcd_its_connection(live: LiveTmcd) -> None:
    """``tmc.dead.`` in front of a subject close to the server's 4 KiB control line overflowed tmcd's own
    publish of the dead letter, and the server closed tmcd's connection for good."""

    async def run() -> None:
        js = live.nc.jetstream()
        for subject in ("tmc.syncer." + "a" * 4060 + ".sync", "tmc.syncer." + "\u00e9" * 2025 + ".sync"):
            await live.nc.publish(subject, b"{}")  # no reply subject: the longest line a publisher can send
            dead = s.dead_letter_subject(subject)
            await wait_for(lambda d=dead: _has(live, d), what=f"the dead letter on {dead[:40]}...")  # type: ignore[misc]
            msg = await js.get_last_msg(s.STREAM_DEAD, dead)
            assert msg.headers is not None
            if subject.isascii():  # nats-py's message get parses a non-ASCII header into an email Header
                assert msg.headers["Tmc-Subject"] == subject
            assert msg.headers["Tmc-Reason"] == "unknown_subject"
        text = await live.metrics()
        assert live.connected(text) and live.restarts(text) == 0

    live.run(run())


async def _has(live: LiveTmcd, subject: str) -> bool:
    return (await dead_counts(live))[subject] > 0
