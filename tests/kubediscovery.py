"""A discovery-only API server for ``kubectl --dry-run=client`` tests: kubectl asks the server
which kinds exist before it parses manifests, even in a client-side dry run."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _handler(documents: Callable[[], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Discovery(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = documents().get(self.path.partition("?")[0])
            code = 200 if doc is not None else 404
            if doc is None:
                doc = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Discovery


@contextlib.contextmanager
def discovery_kubeconfig(path: Path, documents: Callable[[], dict[str, Any]], namespace: str = "") -> Iterator[Path]:
    """Serve ``documents()`` (URL path -> discovery document) on loopback and write a kubeconfig
    for it at ``path``; the server stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(documents))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    context: dict[str, str] = {"cluster": "t", "user": "u"} | ({"namespace": namespace} if namespace else {})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "contexts": [{"name": "t", "context": context}],
        "users": [{"name": "u", "user": {}}],
        "current-context": "t",
    }
    path.write_text(json.dumps(config))
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
