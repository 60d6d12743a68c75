"""HTTPS on tmcd's listener (http.tls_cert, http.tls_key): a bad setting is one line naming the
key (exit 2 from `tmcd run`), the daemon serves probes, metrics and the API over TLS only, and
`kubectl tmc --server https://...` verifies it with --certificate-authority (or skips that with
--insecure-skip-tls-verify) and refuses an unverified certificate in one line."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import daemon_config, kubectl_tmc_async, running_daemon, start_tmcd, wait_for
from tests.pki import make_certs
from tmcd.config import ConfigError, load_config


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("pki"))


def tls_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_both_or_neither(certs: Path) -> None:
    cert, key = str(certs / "server.pem"), str(certs / "server.key")
    assert tls_error(**{"http.tls_cert": cert}) == (
        "config: http.tls_key = '': expected a file path when http.tls_cert is set (set both or neither)"
    )
    assert tls_error(**{"http.tls_key": key}) == (
        "config: http.tls_cert = '': expected a file path when http.tls_key is set (set both or neither)"
    )
    cfg = load_config(None, env={}, overrides={"http.tls_cert": cert, "http.tls_key": key})
    assert (cfg.http.tls_cert, cfg.http.tls_key) == (cert, key)


def test_bad_files_are_named(certs: Path, tmp_path: Path) -> None:
    cert, key = str(certs / "server.pem"), str(certs / "server.key")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        ("/nonexistent/tls.crt", key): "http.tls_cert = '/nonexistent/tls.crt': expected a readable PEM file "
        "(No such file or directory)",
        (str(tmp_path), key): f"http.tls_cert = '{tmp_path}': expected a readable PEM file (Is a directory)",
        (cert, "/nonexistent/tls.key"): "http.tls_key = '/nonexistent/tls.key': expected a readable PEM file "
        "(No such file or directory)",
        (str(garbage), key): f"http.tls_cert = '{garbage}': expected a PEM certificate",
        (key, key): f"http.tls_cert = '{key}': expected a PEM certificate",
        (cert, str(certs / "client.key")): f"http.tls_key = '{certs / 'client.key'}': expected the unencrypted "
        "PEM private key of http.tls_cert (it is not the certificate's key)",
        (cert, cert): f"http.tls_key = '{cert}': expected the unencrypted PEM private key of http.tls_cert "
        "(no PEM private key found)",
    }
    for (c, k), want in cases.items():
        assert tls_error(**{"http.tls_cert": c, "http.tls_key": k}) == f"config: {want}"


def test_an_encrypted_key_is_refused_without_a_prompt(certs: Path, tmp_path: Path) -> None:
    import subprocess

    from tests import tools

    key = tmp_path / "encrypted.key"
    subprocess.run(
        [tools.require("openssl"), "pkey", "-in", str(certs / "server.key"), "-aes256", "-passout", "pass:x",
         "-out", str(key)],
        check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert tls_error(**{"http.tls_cert": str(certs / "server.pem"), "http.tls_key": str(key)}) == (
        f"config: http.tls_key = '{key}': expected the unencrypted PEM private key of http.tls_cert "
        "(encrypted private keys are not supported)"
    )


async def test_tmcd_run_with_a_missing_certificate_exits_2(certs: Path, tmp_path: Path) -> None:
    proc = await start_tmcd(
        *("run", "--http-listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")),
        env={"TMCD_HTTP_TLS_CERT": "/nonexistent/tls.crt", "TMCD_HTTP_TLS_KEY": str(certs / "server.key")},
    )
    assert proc.stderr is not None
    err = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert err == (
        "tmcd: config (TMCD_HTTP_TLS_CERT): http.tls_cert = '/nonexistent/tls.crt': expected a readable PEM "
        "file (No such file or directory)\n"
    )
    assert not (tmp_path / "data").exists()  # refused before starting anything


async def test_https_listener_and_kubectl(certs: Path, nats_url: str, durable_prefix: str, tmp_path: Path) -> None:
    cfg = daemon_config(
        nats_url,
        tmp_path,
        **{
            "http.tls_cert": str(certs / "server.pem"),
            "http.tls_key": str(certs / "server.key"),
            "consumer.durable_prefix": durable_prefix,
        },
    )
    async with running_daemon(cfg) as daemon:
        base = daemon.http.base_url
        assert base.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        async with aiohttp.ClientSession() as s:

            async def ready() -> bool:
                async with s.get(f"{base}/readyz", ssl=trusted) as r:
                    return r.status == 200

            await wait_for(ready, timeout=30, what="/readyz over HTTPS")
            for path in ("/livez", "/metrics", "/api/v1/synctargets"):
                async with s.get(f"{base}{path}", ssl=trusted) as r:
                    assert r.status == 200, path
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not signed by a CA it trusts
                await s.get(f"{base}/livez")
            with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
                await s.get(base.replace("https://", "http://") + "/livez")

        # (the output may hold a log line of this daemon, which runs in this process: lines are picked out)
        ca = str(certs / "ca.pem")
        code, out = await kubectl_tmc_async("get", "clusters", "--server", base, "--certificate-authority", ca)
        # the shared NATS may hold other tests' clusters: an answer (a table or none) is what counts
        lines = out.splitlines()
        assert code == 0 and ("No resources found" in lines or any(x.startswith("NAME ") for x in lines)), out
        code, out = await kubectl_tmc_async("get", "clusters", "--server", base, "--insecure-skip-tls-verify")
        # the shared NATS may hold other tests' clusters: an answer (a table or none) is what counts
        lines = out.splitlines()
        assert code == 0 and ("No resources found" in lines or any(x.startswith("NAME ") for x in lines)), out
        code, out = await kubectl_tmc_async("get", "clusters", "--server", base)
        (line,) = [line for line in out.splitlines() if line.startswith("error:")]
        assert code == 1 and line.startswith(f"error: cannot verify tmcd's certificate at {base}: "), out
        assert line.endswith(
            "pass --certificate-authority FILE with the CA that signed it (or --insecure-skip-tls-verify)"
        )
        code, out = await kubectl_tmc_async(
            "get", "clusters", "--server", base, "--certificate-authority", ca, "--insecure-skip-tls-verify"
        )
        assert code == 2 and "cannot be used together" in out, out
        code, out = await kubectl_tmc_async("get", "clusters", "--server", base, "--certificate-authority", "/nope")
        assert code == 2 and "--certificate-authority /nope: cannot load it (No such file or directory)" in out, out
