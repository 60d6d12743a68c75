"""Startup time of ``kubectl-tmc``: best of N subprocess runs against a running tmcd.

Times ``python -c pass``, ``kubectl-tmc version --client``, ``kubectl-tmc get clusters``
(against an embedded nats-server and a ``tmcd run`` subprocess with only the health agent)
and ``kubectl version --client`` if kubectl is installed.  The last line is
``cli get_s=<x> python_s=<y> ratio=<r>`` (target: ratio < 2.5).

    python -m bench.cli_startup [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tmcd.runtime.embedded import EmbeddedNats, find_binary

BIN = Path(sys.executable).parent


def best_of(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """The fastest of ``runs`` runs (seconds); the command must succeed."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode().strip()}")
        best = min(best, elapsed)
    return best


def precompile() -> None:
    """Write tmcd's bytecode, as ``pip install`` does for an installed plugin.

    An editable checkout has none when PYTHONDONTWRITEBYTECODE is set (as on the CI
    machines), and compiling the plugin's modules on every run would be measured instead
    of starting it.
    """
    import compileall

    import tmcd

    compileall.compile_dir(str(Path(tmcd.__file__).parent), quiet=1)


def wait_ready(cli: str, url: str, timeout: float = 30.0) -> None:
    """Wait until tmcd answers ``get clusters``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run([cli, "get", "clusters", "-o", "json", "--nats-url", url], capture_output=True)
        if proc.returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"tmcd did not answer on {url} within {timeout}s")


def seed(cli: str, url: str, count: int) -> None:
    """Create ``count`` clusters so the table has rows to print."""
    docs = [
        {
            "apiVersion": "workload.kcp.io/v1alpha1",
            "kind": "SyncTarget",
            "metadata": {"name": f"bench-{i:03d}", "labels": {"region": "eu-west-1", "zone": "eu-west-1a"}},
        }
        for i in range(count)
    ]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    subprocess.run([cli, "apply", "-f", "-", "--nats-url", url], input=body.encode(), check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--clusters", type=int, default=20)
    args = parser.parse_args()
    cli = str(BIN / "kubectl-tmc")
    precompile()
    python_s = best_of([sys.executable, "-c", "pass"], args.runs)
    version_s = best_of([cli, "version", "--client"], args.runs)
    with tempfile.TemporaryDirectory(prefix="tmc-bench-") as tmp:
        nats = EmbeddedNats(find_binary(), Path(tmp) / "nats")
        url = nats.start()
        env = {**os.environ, "TMCD_DATA_DIR": str(Path(tmp) / "data")}
        run = ["run", "--nats-url", url, "--http-listen", "127.0.0.1:0", "--agents", "health"]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tmcd.cli.main", *run, "--data-dir", str(Path(tmp) / "data")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(cli, url)
            seed(cli, url, args.clusters)
            get_s = best_of([cli, "get", "clusters", "--nats-url", url], args.runs)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            nats.stop()
    print(f"python -c pass                 {python_s * 1000:7.1f} ms")
    print(f"kubectl-tmc version --client   {version_s * 1000:7.1f} ms")
    print(f"kubectl-tmc get clusters       {get_s * 1000:7.1f} ms")
    kubectl = shutil.which("kubectl")
    if kubectl:
        print(f"kubectl version --client       {best_of([kubectl, 'version', '--client'], args.runs) * 1000:7.1f} ms")
    print(f"cli get_s={get_s:.4f} python_s={python_s:.4f} ratio={get_s / python_s:.2f}")


if __name__ == "__main__":
    main()
