"""API tokens never reach tmcd's output: `tmcd run` at debug level, with every span printed
(console exporter, all sampled), answers authorized, forbidden and unauthorized requests over
HTTP and NATS, and neither its log nor its spans contain a token value, the valid ones or a
wrong one presented; `tmcd config show` masks them, as a bad tokens setting's error line does."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import free_port, kill, kubectl_tmc_async, new_object, start_tmcd, wait_ready
from tmcd.config import ConfigError, load_config

READ_WRITE = "rw-" + secrets.token_hex(16)
READ_ONLY = "ro-" + secrets.token_hex(16)
WRONG = "wrong-" + secrets.token_hex(16)
TOKENS = (READ_WRITE, READ_ONLY, WRONG)
CONFIG = f"""
log_level = "debug"
[nats]
password = "{secrets.token_hex(8)}-nats-password"
[api]
require_auth_for_reads = true
tokens = [
  {{ name = "ci", token = "{READ_WRITE}", access = "read-write" }},
  {{ name = "viewer", token = "{READ_ONLY}", access = "read-only" }},
]
"""


def _assert_no_token(where: str, text: str) -> None:
    for token in TOKENS:
        assert token not in text, f"a token value in {where}"


async def _http(s: aiohttp.ClientSession, method: str, url: str, auth: str | None, body: object = None) -> int:
    headers = {"Authorization": auth} if auth is not None else {}
    async with s.request(method, url, json=body, headers=headers) as r:
        await r.read()
        return r.status


async def test_no_token_in_logs_spans_or_config_dumps(tmp_path: Path) -> None:
    config = tmp_path / "tmcd.toml"
    config.write_text(CONFIG)
    port, data = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    proc = await start_tmcd(
        *("run", "--config", str(config), "--http-listen", f"127.0.0.1:{port}", "--data-dir", str(data)),
        env={"TMCD_OTEL_EXPORTER": "console", "TMCD_OTEL_SAMPLE_RATIO": "1", "TMCD_NATS_PASSWORD": ""},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await wait_ready(base, proc)
        placements = f"{base}/api/v1/placements"
        async with aiohttp.ClientSession() as s:
            assert await _http(s, "POST", placements, f"Bearer {READ_WRITE}", new_object("Placement", name="a")) == 201
            assert await _http(s, "POST", placements, f"Bearer {READ_ONLY}", new_object("Placement", name="b")) == 403
            assert await _http(s, "POST", placements, f"Bearer {WRONG}", new_object("Placement", name="c")) == 401
            assert await _http(s, "GET", placements, f"Bearer {READ_ONLY}") == 200
            assert await _http(s, "GET", placements, f"Bearer {WRONG}") == 401
            assert await _http(s, "GET", placements, f"Token {READ_WRITE}") == 401  # not the Bearer scheme
            assert await _http(s, "GET", placements, None) == 401
            assert await _http(s, "DELETE", f"{placements}/a", f"Bearer {READ_ONLY}") == 403

        nats = (data / "nats.url").read_text().strip()
        for name, token, code, said in (
            ("over-nats", READ_WRITE, 0, "placement.scheduling.kcp.io/over-nats created"),
            ("by-viewer", READ_ONLY, 1, "Forbidden"),
            ("by-stranger", WRONG, 1, "Unauthorized"),
        ):
            manifest = tmp_path / f"{name}.yaml"
            manifest.write_text(json.dumps(new_object("Placement", name=name)))
            got, out = await kubectl_tmc_async("apply", "-f", str(manifest), "--token", token, "--nats-url", nats)
            assert got == code and said in out, out
        got, out = await kubectl_tmc_async("get", "placements", "--token", READ_ONLY, "--nats-url", nats)
        assert got == 0 and "over-nats" in out, out
        got, out = await kubectl_tmc_async("get", "placements", "--token", WRONG, "--nats-url", nats)
        assert got == 1 and "Unauthorized" in out, out
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await kill(proc)
    log, spans = stderr.decode(), stdout.decode()
    assert " DEBUG " in log and "Traceback" not in log, log  # debug lines were written
    assert '"trace_id"' in spans  # and spans
    _assert_no_token("the log", log)
    _assert_no_token("the spans", spans)

    shown = await start_tmcd("config", "show", "--config", str(config), stdout=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(shown.communicate(), 30)
    assert shown.returncode == 0, err
    _assert_no_token("tmcd config show", out.decode())
    assert out.decode().count('token = "****"') == 2
    assert 'password = "****"' in out.decode()


@pytest.mark.parametrize(
    "overrides",
    [
        {"api.tokens": READ_WRITE},  # a token where a list of tables belongs
        {"api.tokens": [{"name": "ci", "token": READ_WRITE, "access": "everything"}]},
        {"api.tokens": [{"name": "ci", "token": READ_WRITE, "acess": "read-only"}]},
        {"api.tokens": [{"name": "ci", "token": READ_WRITE[:10]}]},  # too short
    ],
)
def test_config_errors_do_not_repeat_a_token(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    _assert_no_token("the error", str(info.value))
    assert READ_WRITE[:10] not in str(info.value)


def test_a_token_in_the_environment_is_not_repeated() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"TMCD_API_TOKENS": f"ci:{READ_WRITE}"})
    assert str(info.value) == "config (TMCD_API_TOKENS): api.tokens = '****': expected a list of tables"
