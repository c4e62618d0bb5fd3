"""The daemon's webhook listener: `POST /channels/<plugin_id>/webhook` -> the channel's channel_handle_webhook.

stdlib ThreadingHTTPServer; `WebhookListener` owns the serving thread and joins it (and every request thread) on
close. Only running channels are served. Every failure is an HTTP status with a short text body, never a traceback:
404 unknown or not-running channel (503 if it crashed), 405 not POST, 411 no Content-Length, 413 body over
MAX_BODY_BYTES, 500 the plugin failed or answered badly, 503 too many requests at once.
"""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
import urllib.parse

from supervisor.channels.defaults import DEFAULT_HOST, DEFAULT_PORT
from supervisor.channels.manager import ChannelManager, ChannelNotServed
from supervisor.channels.messages import webhook_request_json
from supervisor.channels.operations import ChannelError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_CONCURRENT_REQUESTS = 8  # below the worker's 16 live instances (auth init needs one per request)
REQUEST_TIMEOUT_S = 10.0
_ROUTE = re.compile(r"^/channels/([^/]+)/webhook$")


class WebhookListenError(Exception):
    """The listener could not bind its address."""


def webhook_path(plugin_id: str) -> str:
    return f"/channels/{urllib.parse.quote(plugin_id, safe='')}/webhook"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close joins the request threads

    def __init__(self, address: tuple[str, int], manager: ChannelManager) -> None:
        self.manager = manager
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"
    server_version = "tark-supervisor"
    sys_version = ""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _serve(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            self._plain(503, "Too many webhook requests at once; retry later\n", close=True)
            return
        try:
            self._route()
        finally:
            self.server.slots.release()

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        match = _ROUTE.match(url.path)
        if match is None:
            self._plain(404, "Not found: webhooks are served at /channels/<plugin_id>/webhook\n", close=True)
            return
        plugin_id = urllib.parse.unquote(match.group(1))
        if self.command != "POST":
            self._plain(405, "Method not allowed: webhooks take POST\n", close=True, extra=[("Allow", "POST")])
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._plain(411, "Length required: send a Content-Length header\n", close=True)
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self._plain(400, "Bad request: invalid Content-Length\n", close=True)
            return
        if length > MAX_BODY_BYTES:
            self._plain(413, f"Payload too large: webhook bodies are limited to {MAX_BODY_BYTES} bytes\n", close=True)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return
        request = webhook_request_json("POST", url.path, url.query, self.headers.items(), body)
        try:
            response = self.server.manager.handle_webhook(plugin_id, request)
        except ChannelNotServed as exc:
            self._plain(503 if exc.crashed else 404, f"{exc}\n")
            return
        except (ChannelError, Exception) as exc:  # noqa: BLE001 - a bad plugin must not break the listener
            if not isinstance(exc, ChannelError):
                log.exception("webhook for channel %s failed", plugin_id)
            log.warning("webhook for channel %s: %s", plugin_id, exc)
            self._plain(500, f"Channel '{plugin_id}' webhook failed: {exc}\n")
            return
        data = response.body.encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _plain(self, status: int, text: str, *, close: bool = False,
               extra: list[tuple[str, str]] | None = None) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        for name, value in extra or []:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        log.debug("webhook %s: " + format, self.address_string(), *args)


class WebhookListener:
    """Binds at construction (so a busy port is an error at once) and serves from `start()` until `close()`."""

    def __init__(self, manager: ChannelManager, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        try:
            self._server = _Server((host, port), manager)
        except OSError as exc:
            raise WebhookListenError(
                f"cannot serve channel webhooks on {host}:{port}: {exc.strerror or exc}; "
                "choose another port with --webhook-port N (0 = any free port)"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="webhook-listener")

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}"

    def start(self) -> None:
        self._thread.start()
        log.info("serving channel webhooks on %s/channels/<plugin_id>/webhook", self.base_url)

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
