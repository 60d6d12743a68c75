"""tmcd.config: layering, env conversion, one-line errors, the example file, render round trip."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from tmcd.config import (
    AGENT_NAMES,
    SWITCHES,
    Config,
    ConfigError,
    env_name,
    env_warnings,
    load_config,
    parse_listen,
    render_config,
    secret_keys,
)
from tmcd.config import load as config_mod

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "tmcd.toml"


def leaf_paths(cls: type[msgspec.Struct] = Config, prefix: str = "") -> list[str]:
    out: list[str] = []
    for f in msgspec.structs.fields(cls):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            out += leaf_paths(f.type, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def flat_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in data.items():
        leaf = prefix + k in leaf_paths()  # a table-valued setting (kube.contexts) is one key
        out |= flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and not leaf else {prefix + k}
    return out


def write(tmp_path: Path, text: str, name: str = "tmcd.toml") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def error(**kwargs: Any) -> ConfigError:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    assert "\n" not in str(info.value)
    return info.value


# --------------------------------------------------------------------------- defaults and the example file


def test_defaults_without_file_or_env() -> None:
    assert load_config(env={}) == Config()


def test_example_file_equals_defaults() -> None:
    assert load_config(str(EXAMPLE), env={}) == Config()


def test_example_file_lists_every_field_and_env_var() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert flat_keys(tomllib.loads(text)) == set(leaf_paths())
    for key in leaf_paths():
        assert config_mod.env_name(key) in text, key


# --------------------------------------------------------------------------- precedence

FILE = """
data_dir = "/file"
agents = ["metrics"]
[nats]
url = "nats://file:4222"
connect_timeout = 3
[http]
listen = "127.0.0.1:1111"
[kv]
history = 7
[streams.syncer]
max_age = 100.0
"""


@pytest.mark.parametrize(
    ("key", "attr", "default", "file_value", "env_value", "env_typed", "flag_value"),
    [
        ("data_dir", lambda c: c.data_dir, ".tmcd", "/file", "/env", "/env", "/flag"),
        ("agents", lambda c: c.agents, list(AGENT_NAMES), ["metrics"], "health", ["health"], ["canary"]),
        ("nats.url", lambda c: c.nats.url, "", "nats://file:4222", "nats://env:4222", "nats://env:4222", "tls://f:1"),
        ("nats.connect_timeout", lambda c: c.nats.connect_timeout, 2.0, 3.0, "4.5", 4.5, 6),
        ("http.listen", lambda c: c.http.listen, "127.0.0.1:8080", "127.0.0.1:1111", ":2222", ":2222", "[::1]:3"),
        ("kv.history", lambda c: c.kv.history, 5, 7, "8", 8, 9),
        ("streams.syncer.max_age", lambda c: c.streams.syncer.max_age, 86400.0, 100.0, "0", 0.0, 1.5),
    ],
)
def test_precedence_default_file_env_flag(
    tmp_path: Path,
    key: str,
    attr: Any,
    default: object,
    file_value: object,
    env_value: str,
    env_typed: object,
    flag_value: object,
) -> None:
    path = write(tmp_path, FILE)
    var = "TMCD_" + key.replace(".", "_").upper()
    assert attr(load_config(env={})) == default
    assert attr(load_config(path, env={})) == file_value
    assert attr(load_config(path, env={var: env_value})) == env_typed
    assert attr(load_config(path, env={var: env_value}, overrides={key: flag_value})) == flag_value
    assert attr(load_config(path, env={var: env_value}, overrides={key: None})) == env_typed
    assert attr(load_config(env={var: env_value})) == env_typed  # env without a file


def test_file_leaves_other_defaults_alone(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FILE), env={})
    assert cfg.streams.syncer.max_bytes == 1 << 30
    assert cfg.streams.placement == Config().streams.placement
    assert cfg.nats.name == "tmcd"


def test_tmcd_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "/from-env-file"\n')
    other = write(tmp_path, 'data_dir = "/explicit"\n', "other.toml")
    assert load_config(env={"TMCD_CONFIG": path}).data_dir == "/from-env-file"
    assert load_config(other, env={"TMCD_CONFIG": path}).data_dir == "/explicit"
    assert load_config(env={"TMCD_CONFIG": ""}) == Config()


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMCD_CONFIG", raising=False)
    monkeypatch.setenv("TMCD_DATA_DIR", "/os-environ")
    assert load_config().data_dir == "/os-environ"


# --------------------------------------------------------------------------- env conversion


def test_env_conversion_of_numbers_lists_and_strings() -> None:
    cfg = load_config(
        env={
            "TMCD_NATS_SERVER_BIN": "/opt/nats-server",
            "TMCD_STREAMS_DEAD_MAX_BYTES": " -1 ",
            "TMCD_STREAMS_SYNCER_MAX_AGE": "1e3",
            "TMCD_CONSUMER_BATCH": "10",
            "TMCD_NATS_RECONNECT_WAIT_MIN": "1",
            "TMCD_AGENTS": " metrics , health ,",
            "TMCD_NATS_NAME": " spaced ",
            "TMCD_LOG_LEVEL": "WARNING",
        }
    )
    assert cfg.nats.server_bin == "/opt/nats-server"
    assert cfg.streams.dead.max_bytes == -1
    assert cfg.streams.syncer.max_age == 1000.0
    assert cfg.consumer.batch == 10
    assert cfg.nats.reconnect_wait_min == 1.0
    assert isinstance(cfg.nats.reconnect_wait_min, float)
    assert cfg.agents == ["metrics", "health"]
    assert cfg.nats.name == " spaced "  # strings are taken verbatim
    assert cfg.log_level == "warning"


@pytest.mark.parametrize(
    ("text", "want"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("No", False)],
)
def test_env_conversion_of_bools(text: str, want: bool) -> None:
    leaf = config_mod._Leaf(bool, mi.type_info(bool))
    assert config_mod._from_string(leaf, "x.flag", text, "TMCD_X_FLAG") is want


def test_env_bool_rejects_other_words() -> None:
    leaf = config_mod._Leaf(bool, mi.type_info(bool))
    with pytest.raises(ConfigError) as info:
        config_mod._from_string(leaf, "x.flag", "maybe", "TMCD_X_FLAG")
    assert str(info.value) == "config (TMCD_X_FLAG): x.flag = 'maybe': expected a boolean (true/false)"


def test_unknown_tmcd_env_vars_are_ignored() -> None:
    assert load_config(env={"TMCD_NOPE": "1", "TMCD_NATS": "x", "TMCD_NATS_URLL": "x", "HOME": "/"}) == Config()


def test_unknown_tmcd_env_vars_warn_with_a_suggestion() -> None:
    env = {
        "TMCD_NATS_ULR": "nats://x:4222",
        "TMCD_STREAMS_SYNCER_MAXAGE": "60",
        "TMCD_NO_SPEEDUP": "1",
        "TMCD_log_level": "debug",
        "TMCD_ZZZZZZ": "1",
        "TMCD_NATS_URL": "nats://y:4222",  # known: no warning
        "TMC_NATS_URL": "nats://z:4222",  # kubectl tmc's, not tmcd's: not ours to judge
        "PATH": "/bin",
    }
    assert env_warnings(env) == [
        "unknown environment variable TMCD_NATS_ULR (did you mean TMCD_NATS_URL?)",
        "unknown environment variable TMCD_NO_SPEEDUP (did you mean TMCD_NO_SPEEDUPS?)",
        "unknown environment variable TMCD_STREAMS_SYNCER_MAXAGE (did you mean TMCD_STREAMS_SYNCER_MAX_AGE?)",
        "unknown environment variable TMCD_ZZZZZZ (not a tmcd setting; see config/tmcd.toml)",
        "unknown environment variable TMCD_log_level (did you mean TMCD_LOG_LEVEL?)",
    ]
    assert load_config(env=env).nats.url == "nats://y:4222"  # a warning, not an error


def test_every_setting_and_switch_is_a_known_env_var() -> None:
    env = {env_name(key): "" for key in leaf_paths()} | dict.fromkeys(SWITCHES, "")
    assert "TMCD_STREAMS_DEAD_MAX_BYTES" in env and "TMCD_NO_EXTENSIONS" in env
    assert env_warnings(env) == []
    assert env_warnings({}) == []


def test_env_warnings_default_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMCD_DATA_DIRR", "/tmp/x")
    assert "unknown environment variable TMCD_DATA_DIRR (did you mean TMCD_DATA_DIR?)" in env_warnings()


def test_string_overrides_convert_like_env() -> None:
    cfg = load_config(env={}, overrides={"agents": "metrics,canary", "kv.replicas": "3", "nats.connect_timeout": 1})
    assert cfg.agents == ["metrics", "canary"]
    assert cfg.kv.replicas == 3
    assert cfg.nats.connect_timeout == 1.0


# --------------------------------------------------------------------------- value errors


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[nats]\nconnect_timeout = "abc"', "nats.connect_timeout = 'abc': expected a number > 0"),
        ("[nats]\nconnect_timeout = 0", "nats.connect_timeout = 0: expected a number > 0"),
        ("[nats]\nconnect_timeout = true", "nats.connect_timeout = True: expected a number > 0"),
        ("[kv]\nreplicas = 9", "kv.replicas = 9: expected an integer between 1 and 5"),
        ("[kv]\nhistory = 1.5", "kv.history = 1.5: expected an integer between 1 and 64"),
        ("[streams.dead]\nmax_bytes = -2", "streams.dead.max_bytes = -2: expected an integer >= -1"),
        ("[streams.events]\nmax_age = -1.0", "streams.events.max_age = -1.0: expected a number >= 0"),
        ("[consumer]\nmax_ack_pending = 0", "consumer.max_ack_pending = 0: expected an integer >= 1"),
        ("[nats]\nurl = 4222", "nats.url = 4222: expected a string"),
        (
            '[consumer]\ndurable_prefix = "tmcd.eu"',  # a dot would split the consumer's subject
            "consumer.durable_prefix = 'tmcd.eu': expected a string matching ^[A-Za-z0-9_-]{1,64}$",
        ),
        (
            '[consumer]\ndurable_prefix = ""',
            "consumer.durable_prefix = '': expected a string matching ^[A-Za-z0-9_-]{1,64}$",
        ),
        ('agents = "metrics"', "agents = 'metrics': expected a list of strings"),
        ("agents = [1, 2]", "agents = [1, 2]: expected a list of strings"),
        ("nats = 5", "nats = 5: expected a table [nats]"),
        ('streams = { syncer = "x" }', "streams.syncer = 'x': expected a table [streams.syncer]"),
        ("[http.listen]\nport = 1", "http.listen = {'port': 1}: expected a string"),
    ],
)
def test_type_and_range_errors_from_file(tmp_path: Path, toml: str, message: str) -> None:
    path = write(tmp_path, toml + "\n")
    err = error(path=path)
    assert str(err) == f"config ({path}): {message}"
    assert err.source == path


def test_error_attributes() -> None:
    err = error(overrides={"nats.connect_timeout": "abc"})
    assert str(err) == "config: nats.connect_timeout = 'abc': expected a number > 0"
    assert (err.key, err.value, err.expected, err.source) == ("nats.connect_timeout", "abc", "a number > 0", None)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("TMCD_NATS_CONNECT_TIMEOUT", "abc", "nats.connect_timeout = 'abc': expected a number > 0"),
        ("TMCD_NATS_CONNECT_TIMEOUT", "-1", "nats.connect_timeout = '-1': expected a number > 0"),
        ("TMCD_KV_HISTORY", "1.5", "kv.history = '1.5': expected an integer between 1 and 64"),
        (
            "TMCD_API_MAX_OBJECT_BYTES",
            "2000000",
            "api.max_object_bytes = '2000000': expected an integer between 4096 and 1032192",
        ),
        ("TMCD_CONSUMER_BATCH", "", "consumer.batch = '': expected an integer between 1 and 10000"),
        ("TMCD_HTTP_LISTEN", "nope", "http.listen = 'nope': expected HOST:PORT"),
        (
            "TMCD_AGENTS",
            "metrics,foo",
            "agents = 'metrics,foo': expected a comma-separated subset of " + ",".join(AGENT_NAMES),
        ),
        (
            "TMCD_AGENTS",
            "",
            "agents = '': expected a comma-separated subset of metrics,health,placement,canary,rollback",
        ),
        ("TMCD_LOG_LEVEL", "loud", "log_level = 'loud': expected one of debug, info, warning, error"),
    ],
)
def test_env_errors_name_the_variable(var: str, value: str, message: str) -> None:
    err = error(env={var: value})
    assert str(err) == f"config ({var}): {message}"
    assert err.value == value
    assert err.source == var


# --------------------------------------------------------------------------- semantic checks

SUBSET = "a comma-separated subset of metrics,health,placement,canary,rollback"
URLS = "a comma-separated list of nats://, tls://, ws:// or wss:// URLs"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"http.listen": "nope"}, "http.listen = 'nope': expected HOST:PORT"),
        ({"http.listen": "127.0.0.1"}, "http.listen = '127.0.0.1': expected HOST:PORT"),
        ({"http.listen": "::1:8080"}, "http.listen = '::1:8080': expected HOST:PORT"),
        ({"http.listen": "host:http"}, "http.listen = 'host:http': expected HOST:PORT"),
        ({"http.listen": "h:-1"}, "http.listen = 'h:-1': expected HOST:PORT"),
        (
            {"http.listen": "[::1]:65536"},
            "http.listen = '[::1]:65536': expected HOST:PORT with a port between 0 and 65535",
        ),
        ({"agents": ["metrics", "bogus"]}, f"agents = ['metrics', 'bogus']: expected {SUBSET}"),
        ({"agents": ["health", "health"]}, f"agents = ['health', 'health']: expected {SUBSET}"),
        ({"agents": []}, f"agents = []: expected {SUBSET}"),
        ({"log_level": "trace"}, "log_level = 'trace': expected one of debug, info, warning, error"),
        ({"streams.dead.storage": "disk"}, "streams.dead.storage = 'disk': expected one of file, memory"),
        ({"nats.url": "http://x:4222"}, f"nats.url = 'http://x:4222': expected {URLS}"),
        ({"nats.url": "nats://a:4222,localhost:4222"}, f"nats.url = 'nats://a:4222,localhost:4222': expected {URLS}"),
        ({"nats.url": "nats://"}, f"nats.url = 'nats://': expected {URLS}"),
        (
            {"nats.tls_cert": "c.pem"},
            "nats.tls_key = '': expected a file path when nats.tls_cert is set (set both or neither)",
        ),
        (
            {"nats.tls_key": "k.pem"},
            "nats.tls_cert = '': expected a file path when nats.tls_key is set (set both or neither)",
        ),
        (
            {"nats.reconnect_wait_min": 40},
            "nats.reconnect_wait_min = 40: expected a number <= nats.reconnect_wait_max (30)",
        ),
        (
            {"runtime.restart_backoff_max": 0.25},
            "runtime.restart_backoff_min = 0.5: expected a number <= runtime.restart_backoff_max (0.25)",
        ),
    ],
)
def test_semantic_errors(overrides: dict[str, object], message: str) -> None:
    assert str(error(overrides=overrides)) == f"config: {message}"


def test_missing_grpc_exporter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)  # as if not installed
    env = {"TMCD_OTEL_EXPORTER": "otlp", "TMCD_OTEL_ENDPOINT": "collector:4317", "TMCD_OTEL_PROTOCOL": "grpc"}
    err = error(env=env)
    assert str(err) == (
        "config (TMCD_OTEL_PROTOCOL): otel.protocol = 'grpc': expected http/protobuf, "
        "since the gRPC exporter is not installed (pip install 'tmcd[grpc]' to use grpc)"
    )
    assert (err.key, err.source) == ("otel.protocol", "TMCD_OTEL_PROTOCOL")
    # the advice works: http/protobuf needs no extra package
    cfg = load_config(env={**env, "TMCD_OTEL_PROTOCOL": "http/protobuf", "TMCD_OTEL_ENDPOINT": "http://c:4318"})
    assert cfg.otel.protocol == "http/protobuf"


def test_semantic_error_names_the_source(tmp_path: Path) -> None:
    path = write(tmp_path, '[streams.syncer]\nstorage = "ssd"\n')
    assert str(error(path=path)) == f"config ({path}): streams.syncer.storage = 'ssd': expected one of file, memory"
    err = error(env={"TMCD_NATS_TLS_CERT": "c.pem"})
    assert err.key == "nats.tls_key"
    assert err.source == "TMCD_NATS_TLS_CERT"


def test_semantic_values_that_pass() -> None:
    cfg = load_config(
        env={},
        overrides={
            "log_level": "DEBUG",
            "nats.url": "nats://a:4222, tls://b:4222,ws://c,wss://d:443",
            "nats.tls_cert": "c.pem",
            "nats.tls_key": "k.pem",
            "nats.reconnect_wait_min": 30,
            "streams.workload.storage": "memory",
            "agents": ["rollback"],
            "http.listen": "[::]:0",
        },
    )
    assert cfg.log_level == "debug"
    assert cfg.streams.workload.storage == "memory"


@pytest.mark.parametrize(
    ("listen", "want"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        (":9090", ("", 9090)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:65535", ("::", 65535)),
    ],
)
def test_parse_listen(listen: str, want: tuple[str, int]) -> None:
    assert parse_listen(listen) == want


@pytest.mark.parametrize("listen", ["", "8080", "::1:8080", "[::1]8080", "[::1]:", "a b:1", "h:+1", "h:1x", "h:٣"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen(listen)
    assert info.value.key == "http.listen"
    assert info.value.value == listen


# --------------------------------------------------------------------------- unknown keys and files


def test_unknown_key_in_nested_section_suggests_full_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[streams.syncer]\nmax_agee = 1.0\n")
    err = error(path=path)
    assert str(err) == f"config ({path}): streams.syncer.max_agee: unknown key (did you mean streams.syncer.max_age?)"
    assert err.key == "streams.syncer.max_agee"
    assert err.value == 1.0


def test_unknown_key_suggestions() -> None:
    assert str(error(overrides={"nats.urll": "x"})) == "config: nats.urll: unknown key (did you mean nats.url?)"
    assert str(error(overrides={"streams.syncr.max_age": 1})) == (
        "config: streams.syncr: unknown key (did you mean streams.syncer?)"
    )
    assert str(error(overrides={"http.xyzzy": 1})) == (
        "config: http.xyzzy: unknown key (valid keys: listen, tls_cert, tls_key)"
    )


def test_unknown_table_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[natz]\nurl = 'nats://x:1'\n")
    assert str(error(path=path)) == f"config ({path}): natz: unknown key (did you mean nats?)"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[nats]\nurl = "nats://x:1"\nconnect timeout = 2\n')
    err = error(path=path)
    assert err.key == "config"
    assert err.value == path
    assert str(err).startswith(f"config ({path}): invalid TOML: ")
    assert "line 3" in str(err)
    assert "'connect timeout = 2'" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    err = error(path=path)
    assert str(err) == f"config ({path}): cannot read file: No such file or directory"
    assert (err.key, err.value) == ("config", path)
    assert str(error(env={"TMCD_CONFIG": path})) == str(err)


def test_directory_and_non_utf8_files(tmp_path: Path) -> None:
    assert "cannot read file" in str(error(path=str(tmp_path)))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'data_dir = "caf\xe9"\n')
    assert "not UTF-8" in str(error(path=str(bad)))


# --------------------------------------------------------------------------- render


def custom_config() -> Config:
    cfg = Config()
    cfg.data_dir = '/var/lib/tmcd "q" \\ \t\n é 🚀 \x7f\x01'
    cfg.log_level = "debug"
    cfg.agents = ["health", "metrics"]
    cfg.nats.url = "nats://a:4222,nats://b:4222"
    cfg.nats.user = "me"
    cfg.nats.password = "s3cr=t\"'"
    cfg.nats.token = "tok"
    cfg.nats.connect_timeout = float("inf")
    cfg.nats.reconnect_wait_min = 1e-5
    cfg.http.listen = "[::1]:0"
    cfg.streams.dead.max_bytes = -1
    cfg.streams.events.storage = "memory"
    cfg.streams.syncer.max_age = 0.0
    cfg.kv.history = 64
    cfg.rollback.revision_history_limit = 3
    return cfg


def test_render_round_trip(tmp_path: Path) -> None:
    for cfg in (Config(), custom_config()):
        text = render_config(cfg, show_secrets=True)
        tomllib.loads(text)
        assert load_config(write(tmp_path, text), env={}) == cfg


def test_render_layout() -> None:
    text = render_config(Config())
    lines = text.splitlines()
    assert lines[:3] == [
        'data_dir = ".tmcd"',
        'log_level = "info"',
        'agents = ["metrics", "health", "placement", "canary", "rollback"]',
    ]
    headers = [line for line in lines if line.startswith("[")]
    assert headers[:3] == ["[nats]", "[http]", "[streams.syncer]"]
    assert "[streams]" not in headers
    assert headers[-2:] == ["[kube]", "[kube.contexts]"]
    assert flat_keys(tomllib.loads(text)) == set(leaf_paths())


def test_render_masks_secrets() -> None:
    assert secret_keys() == ("nats.password", "nats.token")
    masked = tomllib.loads(render_config(custom_config()))
    assert masked["nats"]["password"] == "****"
    assert masked["nats"]["token"] == "****"
    assert masked["nats"]["user"] == "me"
    plain = tomllib.loads(render_config(Config()))
    assert plain["nats"]["password"] == ""
    assert plain["nats"]["token"] == ""
    assert "s3cr" not in render_config(custom_config())
