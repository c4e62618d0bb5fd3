"""Shared helpers of the capability tests: plugins built from a real plugin.toml, hosts, real local servers."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Callable, Iterator

import contextlib

from policy.limits import Limits
from policy.manifest import parse_manifest
from supervisor.host import PluginHost
from supervisor.plugin import InstalledPlugin


def make_plugin(directory: Path, capabilities: str = "", name: str = "demo") -> InstalledPlugin:
    """An installed plugin in `directory` whose plugin.toml has the given [capabilities] body."""
    directory.mkdir(parents=True, exist_ok=True)
    text = f'[plugin]\nname = "{name}"\nversion = "1.0.0"\ntype = "provider"\n\n[capabilities]\n{capabilities}\n'
    (directory / "plugin.toml").write_text(text)
    return InstalledPlugin(directory=directory, manifest=parse_manifest(text).manifest)


def make_host(tmp_path: Path, capabilities: str = "", name: str = "demo", limits: Limits = Limits(),
              **kwargs) -> PluginHost:
    plugin = make_plugin(tmp_path / name, capabilities, name)
    kwargs.setdefault("audit_path", tmp_path / "audit.log")
    return PluginHost(plugin, limits, **kwargs)


@contextlib.contextmanager
def http_server(handler: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[int]:
    """A real HTTP/1.1 server on 127.0.0.1 in a thread; `handler(request_handler)` answers every request.
    Yields the port; the server and its threads are gone when the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            handler(self)

        do_POST = do_GET

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False
    server.block_on_close = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def reply(req: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: list[tuple[str, str]] = ()) -> None:
    req.send_response(status)
    for name, value in headers:
        req.send_header(name, value)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)
