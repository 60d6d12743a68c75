"""The fuzz targets: tmcd's decoders and parsers fed arbitrary bytes, and what each may raise.

Shared by the atheris harnesses (``fuzz_codec.py``, ``fuzz_api.py``, run for a bounded time) and by
``tests/test_fuzz_targets.py``, which runs both targets over their seed corpus (and a few thousand
mutations of it) in every ``make test`` without atheris.  A target returns normally for any input
tmcd handles as it should: decoded, or refused with the error a client sees.  Anything else (an
unexpected exception type, a 5xx, a decoded message that does not survive a round trip) raises
:class:`Finding`, which atheris reports as a crash and saves the input of.

Input layout (so that a byte flip moves between cases and the seeds stay readable):

codec: ``[selector][subject length][subject bytes...][payload...]``. ``selector`` picks a channel of the
contract (decoded with :func:`tmcd.contracts.codec.decode` on its subject) or, past the channels, a
message type (:func:`~tmcd.contracts.codec.decode_as`); subject length 0 means the channel's example
subject.

api: ``[operation][argument][payload...]``: see :data:`API_OPERATIONS`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any, cast

import msgspec

from tmcd.api import control, errors, nats_api, patches
from tmcd.api.reads import list_filters
from tmcd.api.store import ResourceStore
from tmcd.bus import Bus
from tmcd.contracts.codec import InvalidMessage, decode, decode_as, encode
from tmcd.contracts.examples import EXAMPLES, example_subject
from tmcd.contracts.messages import ALL_MESSAGES
from tmcd.contracts.names import InvalidNameError, validate_name
from tmcd.contracts.subjects import CHANNELS, parse_subject
from tmcd.resources.examples import example
from tmcd.resources.kinds import KINDS
from tmcd.resources.selectors import SelectorError, parse_quantity, parse_selector


class Finding(AssertionError):
    """tmcd did something with a fuzzed input it must never do."""


# --------------------------------------------------------------------------------------------- codec

CODEC_TARGETS = len(CHANNELS) + len(ALL_MESSAGES)
"""Selector values: every channel (by subject), then every message type (by type)."""


def codec_input(selector: int, payload: bytes, subject: str = "") -> bytes:
    """A codec target input: the channel or type at ``selector``, its example subject unless ``subject``."""
    raw = subject.encode()
    if len(raw) > 255:
        raise ValueError("subject too long for the layout")
    return bytes([selector, len(raw)]) + raw + payload


def codec_target(data: bytes) -> None:
    """Decode ``data`` as the layout says; only InvalidMessage may come out, and what decodes round-trips."""
    if len(data) < 2:
        return
    selector, n = data[0] % CODEC_TARGETS, data[1]
    subject = data[2 : 2 + n].decode("utf-8", "replace") if n else ""
    payload = data[2 + n :]
    if selector < len(CHANNELS):
        ch = CHANNELS[selector]
        subject = subject or example_subject(ch)
        try:
            msg = decode(subject, payload, ch)
        except InvalidMessage as err:
            _check_invalid(err)
            return
        route = parse_subject(subject)
        if route is None or not isinstance(msg, ch.message):
            raise Finding(f"{subject!r} decoded as {type(msg).__name__} outside {ch.id}")
        again = decode(subject, encode(msg), ch)
    else:
        tp = ALL_MESSAGES[selector - len(CHANNELS)]
        try:
            msg = decode_as(tp, payload)
        except InvalidMessage as err:
            _check_invalid(err)
            return
        again = decode_as(tp, encode(msg))
    if again != msg:
        raise Finding(f"{type(msg).__name__} changed in a round trip: {msg!r} -> {again!r}")


def _check_invalid(err: InvalidMessage) -> None:
    from tmcd.contracts.codec import INVALID_KINDS, REASONS

    if err.reason not in REASONS or err.kind not in INVALID_KINDS:
        raise Finding(f"InvalidMessage outside the metric's label values: {err.kind}/{err.reason}")


def codec_seeds() -> list[bytes]:
    """Every channel's example on its subject and every type's example, plus a few classic breakers."""
    seeds = []
    for i, ch in enumerate(CHANNELS):
        seeds.append(codec_input(i, encode(EXAMPLES[ch.message])))
    for j, tp in enumerate(ALL_MESSAGES):
        seeds.append(codec_input(len(CHANNELS) + j, encode(EXAMPLES[tp])))
    seeds += [
        codec_input(1, b"[" * 3000),
        codec_input(1, b'{"cluster": "\xff\xfe"}'),
        codec_input(1, b"{}", "tmc.syncer.*.sync"),
        codec_input(2, b'{"schema": 99}', "tmc.syncer.sim-001.batch"),
    ]
    return seeds


_JSON_WORDS = ['{"', '":', '"', "[", "]", "{", "}", ",", "null", "true", "false"]
_JSON_WORDS += ["-1", "0", "1e308", "1.5", "\\u00e9", "\\ud800"]


def _wire_names(types: list[Any]) -> list[str]:
    """Every property name of the types' JSON Schemas (nested structs included), quoted."""
    _, components = msgspec.json.schema_components(types)
    return [f'"{p}"' for c in components.values() for p in c.get("properties", {})]


def codec_words() -> list[str]:
    """The contract's wire names and the channels' subjects, for a libFuzzer dictionary."""
    return [*_JSON_WORDS, *_wire_names(list(ALL_MESSAGES)), *(example_subject(ch) for ch in CHANNELS)]


# ----------------------------------------------------------------------------------------------- api

_store = ResourceStore(cast(Bus, None))  # decode and patch are pure: the bus is never touched


def _client_error(exc: errors.ApiError) -> None:
    if not 400 <= exc.code < 500:
        raise Finding(f"a client's bad input answered {exc.code} {exc.reason}: {exc.message}") from exc


def _api_decode(arg: int, payload: bytes) -> None:
    kind = KINDS[arg % len(KINDS)]
    ns = "shop" if kind.namespaced else ""
    obj = _store.decode(kind, payload, namespace=ns)
    # what the store would write must encode, fit, and decode again (the API cache reads it back)
    encoded = msgspec.json.encode(obj)
    if msgspec.json.decode(encoded, type=kind.type) != obj:
        raise Finding(f"a {kind.kind} changed in a round trip")


def _api_patch(arg: int, payload: bytes) -> None:
    kind = KINDS[(arg >> 2) % len(KINDS)]
    patch_type = patches.PATCH_TYPES[arg & 1]
    status = bool(arg & 2)
    patch = patches.decode(payload)
    current = copy.deepcopy(example(kind.kind))
    obj = _store.patched(kind, current, patch, patch_type, status=status)
    msgspec.json.encode(obj)


def _api_selector(_arg: int, payload: bytes) -> None:
    label, _, field = payload.decode("utf-8", "replace").partition("\x00")
    with contextlib.suppress(SelectorError):
        parse_selector(label)
    list_filters(label, field)


def _api_names(_arg: int, payload: bytes) -> None:
    text = payload.decode("utf-8", "replace")
    with contextlib.suppress(InvalidNameError):
        validate_name(text)
    parse_subject(text)
    with contextlib.suppress(ValueError):
        parse_quantity(text)


def _api_control(_arg: int, payload: bytes) -> None:
    control.decode_request(payload)


def _api_nats(arg: int, payload: bytes) -> None:
    nats_api.decode_request(nats_api.VERBS[arg % len(nats_api.VERBS)], payload, 768 * 1024)


API_OPERATIONS: tuple[Callable[[int, bytes], None], ...] = (
    _api_decode,  # a request body as each kind (POST/PUT), then encoded and decoded as the store would
    _api_patch,  # a PATCH body (merge or JSON patch, on spec or status) applied to each kind's example
    _api_selector,  # labelSelector and fieldSelector (split at NUL)
    _api_names,  # names, subjects and quantities
    _api_control,  # the canary control body
    _api_nats,  # a NATS API request body
)


def api_input(operation: int, arg: int, payload: bytes) -> bytes:
    """An api target input."""
    return bytes([operation, arg]) + payload


def api_target(data: bytes) -> None:
    """Run one API parser on ``data``; only 4xx ApiErrors may come out."""
    if len(data) < 2:
        return
    op = API_OPERATIONS[data[0] % len(API_OPERATIONS)]
    try:
        op(data[1], data[2:])
    except errors.ApiError as exc:
        _client_error(exc)


def _example_json(kind_index: int) -> bytes:
    kind = KINDS[kind_index]
    obj: dict[str, Any] = msgspec.to_builtins(example(kind.kind))
    return msgspec.json.encode(obj)


def api_words() -> list[str]:
    """The kinds' wire names, patch and selector tokens, for a libFuzzer dictionary."""
    extra = ['"op"', '"path"', '"value"', '"from"', '"add"', '"remove"', '"replace"', '"move"', '"copy"', '"test"',
             " in (", " notin (", "!=", "==", "metadata.name=", '"patchType"', '"json"', '"merge"']  # fmt: skip
    return [*_JSON_WORDS, *_wire_names([k.type for k in KINDS]), *extra]


def api_seeds() -> list[bytes]:
    """Each kind's example as a body, a merge and a JSON patch per kind, selectors, names, requests."""
    seeds = [api_input(0, i, _example_json(i)) for i in range(len(KINDS))]
    for i in range(len(KINDS)):
        seeds.append(api_input(1, i << 2, b'{"metadata": {"labels": {"a": "b"}}}'))
        seeds.append(api_input(1, (i << 2) | 1, b'[{"op": "replace", "path": "/metadata/labels", "value": {}}]'))
        seeds.append(api_input(1, (i << 2) | 2, b'{"status": {}}'))
    seeds += [
        api_input(2, 0, b"region in (eu-west-1, us-east-1),!legacy,tier!=db\x00metadata.name=web"),
        api_input(3, 0, b"sim-001"),
        api_input(3, 0, b"tmc.syncer.a*b.sync"),
        api_input(3, 0, b"7500m"),
        api_input(4, 0, b'{"full": true, "reason": "looks good"}'),
        api_input(5, 0, b'{"namespace": "shop", "labelSelector": "a=b", "limit": 5}'),
        api_input(5, 2, b'{"object": {"metadata": {"name": "x"}}}'),
        api_input(1, 1, b"[" * 3000),
    ]
    return seeds
