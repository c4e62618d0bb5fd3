"""A real OpenAI-compatible chat completions server on 127.0.0.1 (port 0) for tests.

    with OpenAIServer() as server:          # server.endpoint == "http://127.0.0.1:<port>/v1"
        ...                                  # server.requests: every request's path, headers and JSON body

It answers POST /v1/chat/completions with a completion built from the request: content
`"<model> heard: <last message content>"`, usage prompt_tokens = number of messages, completion_tokens = words of
the content. `server.behaviour` makes it misbehave: "error" (500 with a JSON error body), "bad_json",
"empty" (empty content), "slow" (answers after `server.delay_s`), "huge" (a body of `server.huge_bytes`).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

BEHAVIOURS = ("ok", "error", "bad_json", "empty", "slow", "huge")


@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # decoded JSON, or the raw text when it is not JSON


def completion(request: dict[str, Any]) -> dict[str, Any]:
    messages = request.get("messages") or [{}]
    content = f"{request.get('model')} heard: {messages[-1].get('content')}"
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": request.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(messages), "completion_tokens": len(content.split()),
                  "total_tokens": len(messages) + len(content.split())},
    }


class OpenAIServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.behaviour = "ok"
        self.delay_s = 2.0
        self.huge_bytes = 1024 * 1024
        self.stopping = threading.Event()  # cuts a "slow" answer short when the server stops
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = False  # server_close joins the handler threads: none are left behind
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-server", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def __enter__(self) -> "OpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode("utf-8", "replace")
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            server.record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path != "/v1/chat/completions":
                return self._send(404, b'{"error":{"message":"no such path"}}')
            behaviour = server.behaviour
            if behaviour == "error":
                return self._send(500, b'{"error":{"message":"the model is on fire"}}')
            if behaviour == "bad_json":
                return self._send(200, b'{"choices": [ this is not json')
            if behaviour == "huge":
                return self._send(200, b'{"pad":"' + b"x" * server.huge_bytes + b'"}')
            if behaviour == "slow":
                server.stopping.wait(server.delay_s)
            answer = completion(body if isinstance(body, dict) else {})
            if behaviour == "empty":
                answer["choices"][0]["message"]["content"] = ""
            self._send(200, json.dumps(answer).encode())

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")  # one request per connection: no idle keep-alive to reset
            self.close_connection = True
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts, size caps)
                pass

    return Handler
