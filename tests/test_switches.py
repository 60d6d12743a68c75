"""TMCD_* switches that are not settings are checked like settings: a bad boolean is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tmcd.config import ConfigError, load_config


@pytest.mark.parametrize("var", ["TMCD_NO_SPEEDUPS", "TMCD_NO_EXTENSIONS"])
def test_a_bad_boolean_switch_is_a_config_error(var: str) -> None:
    with pytest.raises(ConfigError, match=f"{var} = 'maybe': expected a boolean"):
        load_config(None, env={var: "maybe"})
    for good in ("0", "false", "YES", "1", ""):
        load_config(None, env={var: good})


def test_config_show_rejects_a_bad_switch() -> None:
    env = {**os.environ, "TMCD_NO_SPEEDUPS": "maybe"}
    p = subprocess.run(
        [sys.executable, "-m", "tmcd.cli.main", "config", "show"], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["tmcd: config: TMCD_NO_SPEEDUPS = 'maybe': expected a boolean (true/false)"]
