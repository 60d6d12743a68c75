"""The canary analysis's prometheus provider against a real Prometheus scraping a real tmcd."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import daemon_config, running_daemon, wait_for
from tests.test_prometheus_e2e import prometheus_binary, running_prometheus
from tmcd.canary.analysis import ProviderError, ScalarValue
from tmcd.canary.prometheus import query_prometheus, render
from tmcd.resources.canary import PrometheusProvider
from tmcd.runtime.embedded import EmbeddedNats


def test_args_are_substituted_and_a_missing_one_is_named() -> None:
    assert render('up{job="{{ args.job }}"}', {"job": "tmcd"}) == 'up{job="tmcd"}'
    try:
        render("{{args.nope}}", {})
    except KeyError as exc:
        assert exc.args[0] == "nope"


async def test_instant_queries_against_a_real_prometheus(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    binary = prometheus_binary()
    async with running_daemon(daemon_config(nats_server.url, tmp_path / "d")) as d:
        target = d.http.base_url.removeprefix("http://")
        async with running_prometheus(binary, tmp_path / "prom", target) as url:

            async def scraped() -> ScalarValue | None:
                got = await query_prometheus(
                    PrometheusProvider(address=url, query='up{job="{{args.job}}"}'), {"job": "tmcd"}
                )
                return got if isinstance(got, ScalarValue) and got.value == 1.0 else None

            assert await wait_for(scraped, timeout=30, what="Prometheus to scrape tmcd", step=0.2)
            one = await query_prometheus(PrometheusProvider(address=url, query="scalar(up) * 2"), {})
            assert one == ScalarValue(2.0)
            empty = await query_prometheus(PrometheusProvider(address=url, query='up{job="none"}'), {})
            assert empty == ScalarValue(None)  # no data: the metric's noData policy decides
            many = await query_prometheus(PrometheusProvider(address=url, query="tmc_build_info or up"), {})
            assert isinstance(many, ProviderError) and "must return one" in many.message
            bad = await query_prometheus(PrometheusProvider(address=url, query="sum(("), {})
            assert isinstance(bad, ProviderError) and "parse error" in bad.message
            missing = await query_prometheus(PrometheusProvider(address=url, query="{{args.x}}"), {})
            assert isinstance(missing, ProviderError) and "args.x" in missing.message
    down = await query_prometheus(PrometheusProvider(address="http://127.0.0.1:9", query="up"), {}, timeout=2)
    assert isinstance(down, ProviderError)
