"""A real model API server on 127.0.0.1 (port 0) for tests, speaking the three shapes `tark chat` uses:

* Chat Completions on any path ending in `/chat/completions`,
* the OpenAI Responses API on any path containing `/responses`,
* Cloud Code Assist on `<prefix>:generateContent` and `<prefix>:streamGenerateContent?alt=sse`,

each whole or streamed (Chat Completions / Responses when the body says `"stream": true`, Cloud Code Assist by
method). It records every request (path, headers, JSON body) and answers with a reply built from it:
`"<model> heard: <last user text>"`, streamed one word per event; usage: input = number of messages,
output = number of words.

    with ModelServer() as server:      # server.url == "http://127.0.0.1:<port>"
        ...                            # server.requests

`server.behaviour` makes it misbehave: "error" (500), "unauthorized" (401), "bad_json", "empty" (empty text),
"slow" (answers after `delay_s`), "huge" (a body of `huge_bytes`), "endless" (an event stream that never ends,
one event every 20 ms), "endless_line" (one `data:` line that never ends), "malformed" (a data line that is not
JSON), "no_events" (a JSON body to a stream request), "gated" (a stream that sends its first event, then waits
for `server.gate` before the rest).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import attrs

BEHAVIOURS = ("ok", "error", "unauthorized", "bad_json", "empty", "slow", "huge", "endless", "endless_line",
              "malformed", "no_events", "gated")


@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    header_names: tuple[str, ...]  # as sent, in order
    body: Any  # decoded JSON, or the raw text when it is not JSON


def _words(text: str) -> list[str]:
    """The reply cut into stream pieces: every word but the first keeps its leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


# --------------------------------------------------------------------------- the three shapes


class ChatCompletions:
    first_text = 1  # the index of the first event that carries text
    @staticmethod
    def heard(body: dict[str, Any]) -> tuple[str, int]:
        messages = body.get("messages") or [{}]
        return str(messages[-1].get("content")), len(messages)

    @staticmethod
    def whole(model: str, text: str, usage: tuple[int, int]) -> dict[str, Any]:
        return {"id": "chatcmpl-test", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}

    @staticmethod
    def events(model: str, pieces: list[str], usage: tuple[int, int]) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            data = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return b"data: " + json.dumps(data).encode() + b"\n\n"
        return ([chunk({"role": "assistant", "content": ""}, None)]
                + [chunk({"content": p}, None) for p in pieces]
                + [chunk({}, "stop", usage={"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                            "total_tokens": sum(usage)}),
                   b"data: [DONE]\n\n"])


class Responses:
    first_text = 1
    @staticmethod
    def heard(body: dict[str, Any]) -> tuple[str, int]:
        items = body.get("input") or [{}]
        return str(items[-1].get("content")), len(items)

    @staticmethod
    def _response(model: str, text: str, usage: tuple[int, int], status: str) -> dict[str, Any]:
        return {"id": "resp_test", "object": "response", "model": model, "status": status,
                "output": [{"type": "reasoning", "summary": []},
                           {"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1], "total_tokens": sum(usage)}}

    @classmethod
    def whole(cls, model: str, text: str, usage: tuple[int, int]) -> dict[str, Any]:
        return cls._response(model, text, usage, "completed")

    @classmethod
    def events(cls, model: str, pieces: list[str], usage: tuple[int, int]) -> list[bytes]:
        def event(kind: str, **data: Any) -> bytes:
            return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **data}).encode() + b"\n\n"
        text = "".join(pieces)
        return ([event("response.created", response=cls._response(model, "", (0, 0), "in_progress"))]
                + [event("response.output_text.delta", item_id="msg_1", output_index=1, content_index=0, delta=p)
                   for p in pieces]
                + [event("response.output_text.done", item_id="msg_1", text=text),
                   event("response.completed", response=cls._response(model, text, usage, "completed"))])


class CodeAssist:
    first_text = 0
    @staticmethod
    def heard(body: dict[str, Any]) -> tuple[str, int]:
        contents = (body.get("request") or {}).get("contents") or [{"parts": [{}]}]
        return str(contents[-1]["parts"][0].get("text")), len(contents)

    @staticmethod
    def _chunk(text: str, usage: tuple[int, int] | None, finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if finish:
            candidate["finishReason"] = finish
        inner: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-test"}
        if usage:
            inner["usageMetadata"] = {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1],
                                      "totalTokenCount": sum(usage)}
        return {"response": inner, "traceId": "t-1"}

    @classmethod
    def whole(cls, model: str, text: str, usage: tuple[int, int]) -> dict[str, Any]:
        return cls._chunk(text, usage, "STOP")

    @classmethod
    def events(cls, model: str, pieces: list[str], usage: tuple[int, int]) -> list[bytes]:
        last = len(pieces) - 1
        return [b"data: " + json.dumps(cls._chunk(p, usage if i == last else None, "STOP" if i == last else None))
                .encode() + b"\r\n\r\n" for i, p in enumerate(pieces)]


def _shape(path: str) -> tuple[Any, bool | None] | None:
    """The shape a path speaks, and whether it streams by path (Cloud Code Assist) or by body (None)."""
    if path.endswith("/chat/completions"):
        return ChatCompletions, None
    if "/responses" in path:
        return Responses, None
    if path.endswith(":generateContent"):
        return CodeAssist, False
    if path.endswith(":streamGenerateContent?alt=sse"):
        return CodeAssist, True
    return None


# --------------------------------------------------------------------------- the server


class ModelServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.behaviour = "ok"
        self.delay_s = 2.0
        self.huge_bytes = 1024 * 1024
        self.gate = threading.Event()  # "gated": the rest of the stream waits for it
        self.first_sent = threading.Event()  # "gated": set once the first event is written
        self.stopping = threading.Event()  # cuts waits short when the server stops
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = False  # server_close joins the handler threads: none are left behind
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="model-server", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def __enter__(self) -> "ModelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
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
            server.record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                          tuple(self.headers.keys()), body))
            shape = _shape(self.path)
            if shape is None or not isinstance(body, dict):
                return self._send(404, b'{"error":{"message":"no such path"}}')
            kind, by_path = shape
            stream = by_path if by_path is not None else body.get("stream") is True
            behaviour = server.behaviour
            if behaviour == "error":
                return self._send(500, b'{"error":{"message":"the model is on fire"}}')
            if behaviour == "unauthorized":
                return self._send(401, b'{"error":{"message":"token expired"}}')
            if behaviour == "huge":
                return self._send(200, b'{"pad":"' + b"x" * server.huge_bytes + b'"}')
            if behaviour == "slow":
                server.stopping.wait(server.delay_s)
            heard, count = kind.heard(body)
            text = "" if behaviour == "empty" else f"{body.get('model')} heard: {heard}"
            usage = (count, len(text.split()))
            if not stream or behaviour == "no_events":
                if behaviour == "bad_json":
                    return self._send(200, b'{"choices": [ this is not json')
                return self._send(200, json.dumps(kind.whole(body.get("model"), text, usage)).encode())
            self._stream(kind.events(body.get("model"), _words(text), usage), kind.first_text, behaviour)

        def _stream(self, events: list[bytes], first_text: int, behaviour: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.close_connection = True
            self.end_headers()
            try:
                if behaviour == "malformed":
                    self.wfile.write(events[0] + b"data: {this is not json\n\n")
                elif behaviour == "endless":
                    self._forever(lambda: events[first_text], 0.02)
                elif behaviour == "endless_line":
                    self.wfile.write(b"data: ")
                    self._forever(lambda: b"x" * 4096, 0.005)
                elif behaviour == "gated":
                    self.wfile.write(b"".join(events[: first_text + 1]))
                    server.first_sent.set()
                    server.gate.wait(30)
                    self.wfile.write(b"".join(events[first_text + 1:]))
                else:
                    for event in events:
                        self.wfile.write(event)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (deadline, size cap)
                pass

        def _forever(self, piece: Callable[[], bytes], pause_s: float) -> None:
            end = time.monotonic() + 60  # a safety net for the test run, far past any deadline under test
            while not server.stopping.is_set() and time.monotonic() < end:
                self.wfile.write(piece())
                time.sleep(pause_s)

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
