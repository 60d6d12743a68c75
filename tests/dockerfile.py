"""The Dockerfile's final stage as data, for tests that check it against tmcd and the manifests
(no docker daemon needed)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Image:
    """What the runtime image declares (the last stage)."""

    user: str
    env: dict[str, str]
    volumes: list[str]
    expose: list[int]
    healthcheck: list[str]
    """The HEALTHCHECK's CMD in exec form."""
    runs: list[str]
    """Every RUN instruction's shell text."""
    entrypoint: list[str]
    cmd: list[str]

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    @property
    def http_port(self) -> int:
        return int(self.env["TMCD_HTTP_LISTEN"].rpartition(":")[2])


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        op, _, args = whole.partition(" ")
        out.append((op.upper(), args.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image(path: Path = DOCKERFILE) -> Image:
    """The final stage of ``path``."""
    steps = instructions(path.read_text())
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    user, env, volumes, expose, health, runs = "", {}, [], [], [], []
    entrypoint: list[str] = []
    cmd: list[str] = []
    for op, args in steps[last_from + 1 :]:
        if op == "USER":
            user = args
        elif op == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
        elif op == "VOLUME":
            volumes += _exec_form(args) if args.startswith("[") else args.split()
        elif op == "EXPOSE":
            expose += [int(p.split("/")[0]) for p in args.split()]
        elif op == "HEALTHCHECK":
            health = _exec_form(args[args.index("CMD ") + 4 :].strip())
        elif op == "RUN":
            runs.append(args)
        elif op == "ENTRYPOINT":
            entrypoint = _exec_form(args)
        elif op == "CMD":
            cmd = _exec_form(args)
    return Image(user, env, volumes, expose, health, runs, entrypoint, cmd)
