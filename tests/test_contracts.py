"""The NATS contract: messages, codec, names, subjects and the generated AsyncAPI/JSON Schema files."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from tmcd import __version__
from tmcd.contracts import messages as m
from tmcd.contracts import subjects as s
from tmcd.contracts.asyncapi import build_asyncapi, check, export, message_schema, render
from tmcd.contracts.codec import InvalidMessage, decode, decode_as, encode
from tmcd.contracts.examples import EXAMPLES, example, example_params, example_subject
from tmcd.contracts.messages import ALL_MESSAGES, SCHEMA_VERSION, Message, SyncerHeartbeat
from tmcd.contracts.names import InvalidNameError, is_valid_name, validate_name

SUBJECTS_DIR = Path(__file__).resolve().parent.parent / "subjects"

CHANNEL_IDS = [ch.id for ch in s.CHANNELS]
MESSAGE_NAMES = [tp.__name__ for tp in ALL_MESSAGES]


def _builtins(msg: Message) -> dict[str, Any]:
    out = msgspec.to_builtins(msg)
    assert isinstance(out, dict)
    return out


def _reason(subject: str, data: bytes) -> str:
    with pytest.raises(InvalidMessage) as info:
        decode(subject, data)
    return info.value.reason


# --- examples and round trips ------------------------------------------------------------


def test_every_message_has_an_example() -> None:
    assert set(EXAMPLES) == set(ALL_MESSAGES)
    for tp, ex in EXAMPLES.items():
        assert type(ex) is tp
        assert ex.schema == SCHEMA_VERSION
    assert example(SyncerHeartbeat).cluster == "sim-001"


@pytest.mark.parametrize("tp", ALL_MESSAGES, ids=MESSAGE_NAMES)
def test_round_trip(tp: type[Message]) -> None:
    ex = EXAMPLES[tp]
    data = encode(ex)
    assert decode_as(tp, data) == ex
    # msgspec enforces every Meta constraint (the JSON Schema's bounds) when decoding
    # with the type, so this validates the example against its schema.
    assert msgspec.json.decode(data, type=tp) == ex
    assert msgspec.convert(_builtins(ex), type=tp) == ex


@pytest.mark.parametrize("ch", s.CHANNELS, ids=CHANNEL_IDS)
def test_decode_example_on_its_subject(ch: s.Channel) -> None:
    ex = EXAMPLES[ch.message]
    subject = example_subject(ch)
    assert decode(subject, encode(ex)) == ex
    assert decode(subject, encode(ex), channel=ch) == ex
    for param, field_name in ch.bind.items():
        assert example_params(ch)[param] == getattr(ex, field_name)


@pytest.mark.parametrize("ch", s.CHANNELS, ids=CHANNEL_IDS)
def test_decode_on_another_channel_is_unknown_subject(ch: s.Channel) -> None:
    other = next(c for c in s.CHANNELS if c is not ch)
    with pytest.raises(InvalidMessage) as info:
        decode(example_subject(ch), encode(EXAMPLES[ch.message]), channel=other)
    assert info.value.reason == "unknown_subject"
    assert info.value.kind == other.message.KIND


REQUEST_REPLY = [ch for ch in s.CHANNELS if ch.reply is not None]


@pytest.mark.parametrize("ch", REQUEST_REPLY, ids=[ch.id for ch in REQUEST_REPLY])
def test_reply_examples_round_trip(ch: s.Channel) -> None:
    if ch.reply is None:
        pytest.fail("parametrized over request/reply channels only")
    reply = EXAMPLES[ch.reply]
    assert decode_as(ch.reply, encode(reply)) == reply


# --- decode errors -----------------------------------------------------------------------

HB = s.SYNCER_HEARTBEAT
HB_SUBJECT = example_subject(HB)
HB_DATA = encode(EXAMPLES[SyncerHeartbeat])


def _hb_with(**changes: Any) -> bytes:
    body = _builtins(EXAMPLES[SyncerHeartbeat])
    for key, value in changes.items():
        if value is _DROP:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


_DROP = object()


@pytest.mark.parametrize(
    "data",
    [
        random.Random(1).randbytes(64),
        random.Random(2).randbytes(7),
        b"\xff\xfe\x00garbage",
        b"not json at all",
        b"",
        b"{",
        HB_DATA[:-1],
        HB_DATA[: len(HB_DATA) // 2],
        b'{"cluster": "sim-001", "timestamp": 1764160000.0,',
    ],
    ids=["random64", "random7", "binary", "text", "empty", "brace", "minus1", "half", "trailing-comma"],
)
def test_malformed_json(data: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(HB_SUBJECT, data)
    assert info.value.reason == "malformed_json"
    assert info.value.kind == SyncerHeartbeat.KIND


@pytest.mark.parametrize(
    "data",
    [
        _hb_with(cluster=5),
        _hb_with(timestamp="yesterday"),
        _hb_with(sequence=1.5),
        _hb_with(labels=["region"]),
        _hb_with(capacity={"cpu": "lots"}),
        _hb_with(connected="yes"),
        _hb_with(timestamp=_DROP),
        _hb_with(cluster=_DROP),
        _hb_with(timestamp=-1.0),
        _hb_with(interval_seconds=0),
        _hb_with(cluster=""),
        _hb_with(schema=0),
        _hb_with(schema="1"),
        b"{}",
    ],
    ids=[
        "cluster-int",
        "timestamp-str",
        "sequence-float",
        "labels-list",
        "capacity-cpu-str",
        "connected-str",
        "missing-timestamp",
        "missing-cluster",
        "negative-timestamp",
        "zero-interval",
        "empty-cluster",
        "schema-0",
        "schema-str",
        "empty-object",
    ],
)
def test_invalid_fields(data: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(HB_SUBJECT, data)
    assert info.value.reason == "invalid_fields"
    assert info.value.kind == SyncerHeartbeat.KIND


def _deep(n: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * n + b"1" + closer * n if opener == b"[" else b'{"a":' * n + b"1" + b"}" * n


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":' + _deep(2000) + b"}",  # an unknown field: skipped, but still parsed
        b'{"a":' + _deep(200_000) + b"}",
        _deep(2000, b"{", b"}"),
        HB_DATA[:-1] + b',"extra":' + _deep(5000) + b"}",  # after a valid heartbeat
    ],
    ids=["array-2000", "array-200000", "object-2000", "valid-then-deep"],
)
def test_too_deep(data: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(HB_SUBJECT, data)
    assert info.value.reason == "too_deep"
    assert info.value.kind == SyncerHeartbeat.KIND


def test_deep_but_wrong_fields_is_invalid_fields() -> None:
    # the schema probe that tells invalid_fields from unsupported_schema must not blow up either
    data = b'{"cluster": 5, "timestamp": 1.0, "a":' + _deep(5000) + b"}"
    assert _reason(HB_SUBJECT, data) == "invalid_fields"  # the first error msgspec meets
    assert _reason(HB_SUBJECT, b'{"cluster": 5, "a":' + _deep(100) + b"}") == "invalid_fields"


def test_invalid_fields_on_other_messages() -> None:
    ws = s.WORKLOAD_STATS
    body = _builtins(EXAMPLES[ws.message])
    assert _reason(example_subject(ws), json.dumps({**body, "track": "blue"}).encode()) == "invalid_fields"
    hc = s.HEALTH_CHANGE
    body = _builtins(EXAMPLES[hc.message])
    assert _reason(example_subject(hc), json.dumps({**body, "to": "Fine"}).encode()) == "invalid_fields"
    tw = s.TRAFFIC_WEIGHTS
    body = _builtins(EXAMPLES[tw.message])
    assert _reason(example_subject(tw), json.dumps({**body, "weights": {"stable": 101}}).encode()) == "invalid_fields"


@pytest.mark.parametrize("ch", s.CHANNELS, ids=CHANNEL_IDS)
def test_unsupported_schema(ch: s.Channel) -> None:
    subject = example_subject(ch)
    body = _builtins(EXAMPLES[ch.message])
    # A newer schema whose payload otherwise fits...
    assert _reason(subject, json.dumps({**body, "schema": 99}).encode()) == "unsupported_schema"
    # ...and one whose fields this build cannot even read.
    assert _reason(subject, b'{"schema": 99, "something": "new"}') == "unsupported_schema"
    assert _reason(subject, json.dumps({"schema": SCHEMA_VERSION + 1}).encode()) == "unsupported_schema"


def _other_value(ch: s.Channel, param: str, value: str) -> str:
    if param in ch.enums:
        return next(v for v in ch.enums[param] if v != value)
    return value + "-x" if len(value) < 60 else "other"


PARAMETERISED = [ch for ch in s.CHANNELS if ch.params]


@pytest.mark.parametrize("ch", PARAMETERISED, ids=[ch.id for ch in PARAMETERISED])
def test_subject_mismatch(ch: s.Channel) -> None:
    data = encode(EXAMPLES[ch.message])
    assert ch.bind, f"{ch.id} binds no parameter"
    for param in ch.bind:
        params = example_params(ch)
        params[param] = _other_value(ch, param, params[param])
        with pytest.raises(InvalidMessage) as info:
            decode(ch.build(**params), data)
        assert info.value.reason == "subject_mismatch", param
        assert info.value.kind == ch.message.KIND


def test_subject_mismatch_cluster() -> None:
    assert _reason("tmc.syncer.sim-999.heartbeat", HB_DATA) == "subject_mismatch"


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "tmc",
        "foo.bar",
        "tmc.nope.sim-001.heartbeat",
        "tmc.syncer.sim-001",
        "tmc.syncer.sim-001.heartbeat.extra",
        "tmc.syncer.SIM-001.heartbeat",
        "tmc.syncer.*.heartbeat",
        "tmc.syncer.>",
        "tmc.workload.sim-001.shop.checkout.blue",
        "tmc.ctl.sync.sim-001.explode",
        "tmc.dead.tmc.syncer.sim-001.heartbeat",
    ],
)
def test_unknown_subject(subject: str) -> None:
    assert _reason(subject, HB_DATA) == "unknown_subject"


def test_unknown_fields_are_ignored() -> None:
    for ch in s.CHANNELS:
        ex = EXAMPLES[ch.message]
        body = {**_builtins(ex), "added_later": {"nested": [1, 2, 3]}, "zzz": None}
        assert decode(example_subject(ch), json.dumps(body).encode()) == ex


# --- names -------------------------------------------------------------------------------

VALID_NAMES = ["a", "0", "sim-001", "a-b-c", "1abc", "checkout-eu", "a" * 63, "x9"]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name: str) -> None:
    assert validate_name(name, "cluster") == name
    assert is_valid_name(name)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a.b", "NATS subject token"),
        ("a*", "NATS subject token"),
        ("a>", "NATS subject token"),
        ("a b", "NATS subject token"),
        ("a\tb", "NATS subject token"),
        ("a\n", "NATS subject token"),
        ("A", "DNS-1123"),
        ("Sim-001", "DNS-1123"),
        ("-a", "DNS-1123"),
        ("a-", "DNS-1123"),
        ("a_b", "DNS-1123"),
        ("é", "DNS-1123"),
        ("", "empty"),
        ("a" * 64, "at most 63"),
        (5, "string"),
        (None, "string"),
        (b"abc", "string"),
    ],
)
def test_invalid_names(name: object, fragment: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_name(name, "cluster")
    err = info.value
    assert isinstance(err, ValueError)
    assert fragment in str(err)
    assert "cluster" in str(err)
    assert err.what == "cluster"
    assert err.name == name
    assert not is_valid_name(name)


def test_subject_breaker_is_named_in_the_message() -> None:
    with pytest.raises(InvalidNameError, match=r"'\.'"):
        validate_name("a.b")
    with pytest.raises(InvalidNameError, match=r"'\*', '>'"):
        validate_name("a>*")


# --- subjects ----------------------------------------------------------------------------

BUILDERS: list[tuple[Callable[..., str], s.Channel]] = [
    (s.syncer_heartbeat, s.SYNCER_HEARTBEAT),
    (s.syncer_sync, s.SYNCER_SYNC),
    (s.syncer_batch, s.SYNCER_BATCH),
    (s.api_health, s.API_HEALTH),
    (s.syncer_conn, s.SYNCER_CONN),
    (s.placement_decision, s.PLACEMENT_DECISION),
    (s.workload_stats, s.WORKLOAD_STATS),
    (s.health_change, s.HEALTH_CHANGE),
    (s.canary_event, s.CANARY_EVENT),
    (s.rollback_event, s.ROLLBACK_EVENT),
    (s.traffic_weights, s.TRAFFIC_WEIGHTS),
    (s.traffic_applied, s.TRAFFIC_APPLIED),
    (s.ctl_sync, s.CTL_SYNC),
    (s.ctl_canary, s.CTL_CANARY),
    (s.ctl_rollback, s.CTL_ROLLBACK),
]
BAD_TOKENS = ["a.b", "a*", "a>", "a b", "A", "", "-a", "a" * 64]


def test_every_channel_has_a_builder() -> None:
    assert sorted(ch.id for _, ch in BUILDERS) == sorted(CHANNEL_IDS)


@pytest.mark.parametrize(("builder", "ch"), BUILDERS, ids=[ch.id for _, ch in BUILDERS])
def test_builder_builds_example_subject(builder: Callable[..., str], ch: s.Channel) -> None:
    params = example_params(ch)
    subject = builder(**params)
    assert subject == example_subject(ch) == ch.build(**params)
    assert subject.split(".")[0] == s.PREFIX
    assert len(subject.split(".")) == len(ch.tokens)


@pytest.mark.parametrize(("builder", "ch"), BUILDERS, ids=[ch.id for _, ch in BUILDERS])
def test_builder_rejects_bad_names(builder: Callable[..., str], ch: s.Channel) -> None:
    for param in ch.params:
        for bad in [*BAD_TOKENS, "nonsense-value"] if param in ch.enums else BAD_TOKENS:
            params = {**example_params(ch), param: bad}
            with pytest.raises(InvalidNameError) as info:
                builder(**params)
            assert info.value.what == param
            assert info.value.name == bad


def test_build_missing_parameter() -> None:
    with pytest.raises(TypeError, match="cluster"):
        s.SYNCER_HEARTBEAT.build()


@pytest.mark.parametrize("ch", s.CHANNELS, ids=CHANNEL_IDS)
def test_parse_subject_round_trip(ch: s.Channel) -> None:
    subject = example_subject(ch)
    route = s.parse_subject(subject)
    assert route is not None
    assert route.channel is ch
    assert route.params == example_params(ch)
    assert ch.build(**route.params) == subject
    assert s.channel(ch.id) is ch


@pytest.mark.parametrize(
    "subject",
    [
        "",
        ".",
        "tmc",
        "tmc.",
        "garbage",
        "tmc.syncer..heartbeat",
        "tmc.syncer.sim-001.heartbeats",
        "tmc.syncer.sim-001.heartbeat.x",
        "tmc.syncer.a.b.heartbeat",
        "tmc.syncer.a b.heartbeat",
        "tmc.placement.*.decision",
        "tmc.health.planet.earth",
        "tmc.ctl.canary.shop.checkout.explode",
        "TMC.syncer.sim-001.heartbeat",
        "tmc.dead.tmc.syncer.sim-001.heartbeat",
        "\x00\x01",
    ],
)
def test_parse_subject_garbage(subject: str) -> None:
    assert s.parse_subject(subject) is None


def test_channel_lookup_and_wildcards() -> None:
    with pytest.raises(KeyError):
        s.channel("nope")
    assert s.SYNCER_HEARTBEAT.wildcard == "tmc.syncer.*.heartbeat"
    assert s.WORKLOAD_STATS.params == ("cluster", "namespace", "workload", "track")
    assert s.dead_letter_subject("tmc.syncer.sim-001.heartbeat") == "tmc.dead.tmc.syncer.sim-001.heartbeat"
    assert len({ch.id for ch in s.CHANNELS}) == len(s.CHANNELS)
    assert len({ch.template for ch in s.CHANNELS}) == len(s.CHANNELS)


def test_a_subject_too_long_to_copy_whole_gets_a_short_dead_letter_subject() -> None:
    # a publisher's subject may be up to ~4 KiB; `tmc.dead.` in front of it must not overflow tmcd's own
    # publish line (the server would close tmcd's connection)
    long = "tmc.syncer." + "\u00e9" * 2040 + ".sync"
    dead = s.dead_letter_subject(long)
    assert dead == "tmc.dead.tmc.syncer._toolong." + dead.rsplit(".", 1)[1]
    assert dead != s.dead_letter_subject(long + "x")
    many = "tmc.syncer." + "a." * 1000 + "sync"
    assert len(s.dead_letter_subject(many).encode()) <= s.MAX_DEAD_SUBJECT_BYTES
    assert s.dead_letter_subject(many).startswith("tmc.dead.tmc.syncer.a.a.")
    edge = "tmc.syncer." + "a" * (s.MAX_DEAD_SUBJECT_BYTES - 25) + ".sync"  # tmc.dead.<edge>: exactly the limit
    assert s.dead_letter_subject(edge) == f"tmc.dead.{edge}"
    assert "_toolong" in s.dead_letter_subject(edge + "x")


@pytest.mark.parametrize("ch", s.CHANNELS, ids=CHANNEL_IDS)
def test_channel_is_consistent_with_its_message(ch: s.Channel) -> None:
    info = msgspec.inspect.type_info(ch.message)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f for f in info.fields}
    assert set(ch.bind) <= set(ch.params)
    for param, field_name in ch.bind.items():
        assert field_name in fields, f"{ch.id}: {param} bound to unknown field {field_name}"
        if param in ch.enums:
            tp = fields[field_name].type
            if isinstance(tp, msgspec.inspect.Metadata):
                tp = tp.type
            assert isinstance(tp, msgspec.inspect.LiteralType)
            assert set(tp.values) == set(ch.enums[param]), f"{ch.id}: enum {param} differs from {field_name}"
    if ch.stream is not None:
        patterns = s.STREAM_SUBJECTS[ch.stream]
        assert any(ch.template.startswith(p.removesuffix(">")) for p in patterns)


# --- AsyncAPI and JSON Schema ------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_asyncapi("9.9.9")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def test_asyncapi_header(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "tmcd NATS API"
    assert doc["info"]["version"] == "9.9.9"
    assert doc["info"]["description"]
    assert doc["defaultContentType"] == "application/json"
    assert doc["servers"]["local"] == {
        "host": "127.0.0.1:4222",
        "protocol": "nats",
        "description": doc["servers"]["local"]["description"],
    }
    json.dumps(doc)  # plain JSON data throughout


def test_asyncapi_channels(doc: dict[str, Any]) -> None:
    assert list(doc["channels"]) == CHANNEL_IDS
    for ch in s.CHANNELS:
        c = doc["channels"][ch.id]
        assert c["address"] == ch.template
        assert list(c.get("parameters", {})) == list(ch.params)
        for param in ch.params:
            p = c["parameters"][param]
            assert p["description"]
            if param in ch.enums:
                assert p["enum"] == list(ch.enums[param])
            else:
                assert "enum" not in p
            assert p["examples"] == [example_params(ch)[param]]
        expected = [ch.message.__name__] + ([ch.reply.__name__] if ch.reply else [])
        assert list(c["messages"]) == expected


def test_asyncapi_operations(doc: dict[str, Any]) -> None:
    ops = doc["operations"]
    assert len(ops) == len(s.CHANNELS)
    by_channel = {op["channel"]["$ref"]: op for op in ops.values()}
    for ch in s.CHANNELS:
        op = by_channel[f"#/channels/{ch.id}"]
        assert op["action"] == "send"
        assert op["messages"] == [{"$ref": f"#/channels/{ch.id}/messages/{ch.message.__name__}"}]
        if ch.reply is None:
            assert "reply" not in op
        else:
            assert op["reply"]["messages"] == [{"$ref": f"#/channels/{ch.id}/messages/{ch.reply.__name__}"}]


def test_asyncapi_messages_have_examples(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    assert list(messages) == MESSAGE_NAMES
    for tp in ALL_MESSAGES:
        msg = messages[tp.__name__]
        assert msg["name"] == tp.__name__
        assert msg["title"]
        assert msg["summary"]
        assert msg["contentType"] == "application/json"
        assert msg["payload"] == {"$ref": f"#/components/schemas/{tp.__name__}"}
        assert len(msg["examples"]) >= 1
        for ex in msg["examples"]:
            assert msgspec.convert(ex["payload"], type=tp) == EXAMPLES[tp]
            assert decode_as(tp, json.dumps(ex["payload"]).encode()) == EXAMPLES[tp]


def test_asyncapi_refs_resolve(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    schemas = doc["components"]["schemas"]
    for tp in ALL_MESSAGES:
        assert schemas[tp.__name__]["type"] == "object"


def test_asyncapi_is_deterministic() -> None:
    assert render("1.2.3") == render("1.2.3")
    assert build_asyncapi("1.2.3") == build_asyncapi("1.2.3")


@pytest.mark.parametrize("tp", ALL_MESSAGES, ids=MESSAGE_NAMES)
def test_message_schema(tp: type[Message]) -> None:
    schema = message_schema(tp)
    assert schema["$ref"] == f"#/$defs/{tp.__name__}"
    props = schema["$defs"][tp.__name__]["properties"]
    assert set(_builtins(EXAMPLES[tp])) == set(props)
    json.dumps(schema)


def test_export_and_check(tmp_path: Path) -> None:
    written = export(tmp_path, "1.2.3")
    assert tmp_path / "asyncapi.yaml" in written
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(f"{n}.json" for n in MESSAGE_NAMES)
    assert check(tmp_path, "1.2.3") == []
    first = {p: p.read_bytes() for p in written}
    export(tmp_path, "1.2.3")
    assert {p: p.read_bytes() for p in written} == first

    text = (tmp_path / "asyncapi.yaml").read_text(encoding="utf-8")
    assert "&id" not in text and "*id" not in text  # no YAML anchors/aliases
    assert yaml.safe_load(text) == build_asyncapi("1.2.3")
    for tp in ALL_MESSAGES:
        data = (tmp_path / "schemas" / f"{tp.__name__}.json").read_bytes()
        assert data.endswith(b"}\n")
        assert json.loads(data) == message_schema(tp)

    # A changed version, an edited file and a stale schema are all reported...
    assert check(tmp_path, "1.2.4") == [str(tmp_path / "asyncapi.yaml")]
    edited = tmp_path / "schemas" / "SyncEvent.json"
    edited.write_bytes(edited.read_bytes() + b" ")
    stale = tmp_path / "schemas" / "Removed.json"
    stale.write_text("{}\n")
    (tmp_path / "schemas" / "notes.txt").write_text("not generated, not ours\n")
    assert check(tmp_path, "1.2.3") == [str(edited), str(stale)]
    # ...and export repairs them.
    export(tmp_path, "1.2.3")
    assert not stale.exists()
    assert (tmp_path / "schemas" / "notes.txt").exists()
    assert check(tmp_path, "1.2.3") == []


def test_check_missing_directory(tmp_path: Path) -> None:
    missing = check(tmp_path / "nothing", "1.2.3")
    assert len(missing) == 1 + len(ALL_MESSAGES)


def test_committed_files_are_up_to_date() -> None:
    differ = check(SUBJECTS_DIR, __version__)
    assert differ == [], (
        f"{len(differ)} generated contract file(s) are out of date: {', '.join(differ)}. "
        "Regenerate them with `tmcd schema export subjects` and commit the result."
    )


def test_batch_with_a_foreign_event_is_a_subject_mismatch() -> None:
    from tmcd.contracts.codec import InvalidMessage, decode, encode
    from tmcd.contracts.messages import SyncEvent, SyncEventBatch

    batch = SyncEventBatch(
        cluster="sim-001",
        timestamp=1.0,
        events=[SyncEvent(cluster="sim-002", timestamp=1.0, resource="v1/pods")],
    )
    with pytest.raises(InvalidMessage) as info:
        decode(s.syncer_batch("sim-001"), encode(batch))
    assert info.value.reason == "subject_mismatch"


# --- traffic ---------------------------------------------------------------------------------


def test_traffic_weights_without_workload_still_decode() -> None:
    """A payload written before ``workload`` existed decodes, and the route names the workload."""
    old = b'{"schema":1,"namespace":"shop","route":"checkout","timestamp":5.0,'
    old += b'"weights":{"stable":90,"canary":10},"clusters":["sim-001"],"generation":3}'
    msg = decode(s.traffic_weights("shop", "checkout"), old)
    assert isinstance(msg, m.TrafficWeights)
    assert (msg.workload, msg.workload_name, msg.canary_percent, msg.generation) == ("", "checkout", 10, 3)
    bare = decode(s.traffic_weights("shop", "checkout"), b'{"namespace":"shop","route":"checkout","timestamp":1}')
    assert isinstance(bare, m.TrafficWeights) and bare.weights == {"stable": 100, "canary": 0}
    named = m.TrafficWeights(namespace="shop", route="checkout", timestamp=1.0, workload="checkout-api")
    assert named.workload_name == "checkout-api"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ('"weights":{"stable":50,"canary":40}', "must sum to 100"),
        ('"weights":{"stable":50,"blue":50}', "unknown track 'blue'"),
        ('"weights":{"stable":150,"canary":-50}', "weights"),
        ('"workload":"Not.A.Label"', "workload"),
    ],
)
def test_traffic_weights_that_cannot_be_applied_are_invalid_fields(fields: str, fragment: str) -> None:
    data = b'{"namespace":"shop","route":"checkout","timestamp":1,' + fields.encode() + b"}"
    with pytest.raises(InvalidMessage) as info:
        decode(s.traffic_weights("shop", "checkout"), data)
    assert info.value.reason == "invalid_fields" and fragment in info.value.detail


def test_traffic_subjects_do_not_collide() -> None:
    """``applied`` is a namespace name too: the weights of route r in namespace applied are not a report."""
    weights = s.parse_subject("tmc.traffic.applied.r")
    applied = s.parse_subject("tmc.traffic.applied.shop.checkout")
    assert weights is not None and weights.channel is s.TRAFFIC_WEIGHTS
    assert weights.params == {"namespace": "applied", "route": "r"}
    assert applied is not None and applied.channel is s.TRAFFIC_APPLIED
    assert applied.params == {"namespace": "shop", "route": "checkout"}
    assert s.STREAM_SUBJECTS[s.STREAM_TRAFFIC] == ("tmc.traffic.>",)
    assert s.STREAM_MAX_MSGS_PER_SUBJECT[s.STREAM_TRAFFIC] == 1


def test_traffic_applied_canary_weights() -> None:
    report = m.TrafficApplied(
        namespace="shop",
        route="checkout",
        timestamp=1.0,
        generation=2,
        weights={"sim-001": {"stable": 75, "canary": 25}, "sim-002": {"stable": 100, "canary": 0}},
    )
    assert report.canary() == {"sim-001": 25}
