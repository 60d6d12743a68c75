"""The fuzz targets of tests/fuzz/ over their seed corpus and a fixed set of mutations of it, without
atheris: the harnesses cannot rot, and what a fuzzing run found once stays found (regressions below)."""

from __future__ import annotations

import random

import pytest

from tests.fuzz.targets import (
    API_OPERATIONS,
    CODEC_TARGETS,
    api_input,
    api_seeds,
    api_target,
    codec_input,
    codec_seeds,
    codec_target,
)
from tmcd.contracts.codec import InvalidMessage, decode

_TOKENS = (b"[", b"{", b"}", b"]", b'"', b"\\u0000", b"\\ud800", b"\xff", b"-1", b"1e400", b"null", b",", b":")


def mutations(seeds: list[bytes], n: int, seed: int) -> list[bytes]:
    """``n`` deterministic mutations of the seeds: byte flips, cuts, splices and JSON-ish tokens (the
    first two bytes, the target's selector, kept as they are, so every case is reached)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randint(2, max(2, len(data)))
            what = rng.randrange(4)
            if what == 0 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            elif what == 1:
                del data[pos : pos + rng.randint(1, 16)]
            elif what == 2:
                data[pos:pos] = rng.choice(_TOKENS) * rng.choice((1, 1, 2, 70, 1200))
            else:
                other = rng.choice(seeds)
                data[pos:] = other[rng.randint(2, max(2, len(other))) :]
        out.append(bytes(data))
    return out


def test_the_seed_corpora_cover_every_case() -> None:
    assert {s[0] % CODEC_TARGETS for s in codec_seeds()} == set(range(CODEC_TARGETS))
    assert {s[0] for s in api_seeds()} == set(range(len(API_OPERATIONS)))


@pytest.mark.parametrize("data", codec_seeds(), ids=lambda d: f"codec-{d[0]}-{len(d)}")
def test_codec_seeds(data: bytes) -> None:
    codec_target(data)


@pytest.mark.parametrize("data", api_seeds(), ids=lambda d: f"api-{d[0]}-{d[1]}-{len(d)}")
def test_api_seeds(data: bytes) -> None:
    api_target(data)


def test_codec_mutations() -> None:
    for data in mutations(codec_seeds(), 3000, seed=16):
        codec_target(data)


def test_api_mutations() -> None:
    for data in mutations(api_seeds(), 3000, seed=16):
        api_target(data)


# What fuzzing found, kept as regressions.
REGRESSIONS_API = [
    # a PATCH body nested past the decoder's recursion limit was a RecursionError, answered 500
    api_input(1, 0, b"[" * 5000),
    # one nested less deeply decoded, then the JSON patch's deepcopy of its value hit the limit
    api_input(1, 1, b'[{"op": "add", "path": "/metadata/x", "value": ' + b"[" * 900 + b"]" * 900 + b"}]"),
    # a NATS API request's object nested too deeply
    api_input(5, 2, b'{"object": ' + b"[" * 5000 + b"}"),
    # a CanaryRollout whose status evidence nests deeply: stored, it could not be copied or read back
    api_input(0, 2, b'{"status": {"analysisRuns": [{"metrics": [{"name": "x", "evidence": {"a": '
              + b"[" * 900 + b"]" * 900 + b"}}]}]}}"),
]  # fmt: skip


REGRESSIONS_CODEC = [
    # a heartbeat from after the year 9999 decoded, and the health agent crashed writing its time down
    codec_input(0, b'{"cluster": "sim-001", "timestamp": 1e12}'),
    codec_input(0, b'{"cluster": "sim-001", "timestamp": 1e308}'),
]


@pytest.mark.parametrize("data", REGRESSIONS_CODEC, ids=lambda d: f"codec-{d[0]}-{len(d)}")
def test_codec_regressions(data: bytes) -> None:
    codec_target(data)
    with pytest.raises(InvalidMessage, match="invalid_fields"):
        decode("tmc.syncer.sim-001.heartbeat", data[2:])


@pytest.mark.parametrize("data", REGRESSIONS_API, ids=lambda d: f"api-{d[0]}-{d[1]}-{len(d)}")
def test_api_regressions(data: bytes) -> None:
    api_target(data)


def test_codec_target_handles_subjects_of_its_own() -> None:
    long = "tmc.syncer." + "a" * 200 + ".sync"
    for subject in ("tmc.syncer.*.sync", "tmc.syncer.>", "tmc.syncer.s\u00e9.sync", long):
        codec_target(codec_input(1, b'{"cluster": "x", "timestamp": 1, "resource": "v1/pods"}', subject))
