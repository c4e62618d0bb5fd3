"""A real OAuth 2.0 authorization server on 127.0.0.1 for tests (authorization code + PKCE, device grant).

    with OAuthServer() as server:          # listening on 127.0.0.1:<free port>, served by its own thread
        server.url                         # http://127.0.0.1:<port>
        server.requests                    # every request: Recorded(method, path, params)

- GET  /authorize  auto-approves: 302 to redirect_uri with code (+ state when sent); `authorize_error` makes
                   it redirect with error=... instead.
- POST /token      authorization_code: the code must be unused, for this client and redirect_uri, and
                   S256(code_verifier) must equal the code_challenge; device_code: answers the entries of
                   `device_script` in turn ("authorization_pending", "slow_down", "access_denied",
                   "expired_token") and then tokens. `token_failure = (status, body)` overrides every answer.
- POST /device     device authorization: device_code, user_code, verification_uri(_complete), `device_interval`,
                   `device_expires_in`.
Tokens are `tokens` (a dict) with `access_token` made unique per grant unless given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import wasmtime

CLIENT_ID = "tark-example"


@attrs.frozen
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    at: float


@attrs.define
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    method: str
    scope: str


class OAuthServer:
    def __init__(self, client_id: str = CLIENT_ID) -> None:
        self.client_id = client_id
        self.tokens: dict[str, Any] = {"token_type": "Bearer", "expires_in": 3600, "refresh_token": "refresh-1",
                                       "scope": "openid chat"}
        self.authorize_error: str | None = None
        self.token_failure: tuple[int, str] | None = None
        self.device_script: list[str] = []
        self.device_interval: int = 0
        self.device_expires_in: int = 600
        self.requests: list[Recorded] = []
        self.issued: list[dict[str, Any]] = []
        self._grants: dict[str, Grant] = {}
        self._device_codes: set[str] = set()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = False  # server_close joins every handler thread
        self._thread = threading.Thread(target=self._http.serve_forever, name="oauth-test-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> "OAuthServer":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # ---- endpoint logic (called from the handler threads) ----
    def _record(self, method: str, path: str, params: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, params, time.monotonic()))

    def authorize(self, params: dict[str, str]) -> tuple[int, dict[str, str], str]:
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or params.get("response_type") != "code" or not redirect_uri:
            return 400, {}, "bad authorization request"
        back: dict[str, str] = {}
        if self.authorize_error:
            back["error"] = self.authorize_error
        else:
            code = secrets.token_urlsafe(16)
            with self._lock:
                self._grants[code] = Grant(params["client_id"], redirect_uri, params.get("code_challenge", ""),
                                           params.get("code_challenge_method", ""), params.get("scope", ""))
            back["code"] = code
        if "state" in params:
            back["state"] = params["state"]
        return 302, {"Location": f"{redirect_uri}?{urlencode(back)}"}, ""

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.token_failure is not None:
            status, body = self.token_failure
            return status, {"raw": body}
        if form.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client"}
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            with self._lock:
                grant = self._grants.pop(form.get("code", ""), None)
            if grant is None or grant.redirect_uri != form.get("redirect_uri") or grant.method != "S256":
                return 400, {"error": "invalid_grant"}
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.challenge:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            return 200, self._issue()
        if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
            if form.get("device_code") not in self._device_codes:
                return 400, {"error": "invalid_grant"}
            with self._lock:
                step = self.device_script.pop(0) if self.device_script else None
            if step is not None:
                return 400, {"error": step}
            return 200, self._issue()
        return 400, {"error": "unsupported_grant_type"}

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client"}
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._device_codes.add(code)
        return 200, {"device_code": code, "user_code": "WDJB-MJHT", "verification_uri": f"{self.url}/activate",
                     "verification_uri_complete": f"{self.url}/activate?user_code=WDJB-MJHT",
                     "interval": self.device_interval, "expires_in": self.device_expires_in}

    def _issue(self) -> dict[str, Any]:
        tokens = dict(self.tokens)
        tokens.setdefault("access_token", "at" + secrets.token_hex(12))
        with self._lock:
            self.issued.append(tokens)
        return tokens


def _handler(server: OAuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            server._record("GET", url.path, params)
            if url.path != "/authorize":
                self._send(404, {}, b"not found")
                return
            status, headers, body = server.authorize(params)
            self._send(status, headers, body.encode())

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items()}
            server._record("POST", url.path, form)
            if url.path == "/token":
                status, document = server.token(form)
            elif url.path == "/device":
                status, document = server.device(form)
            else:
                self._send(404, {}, b"not found")
                return
            raw = document["raw"].encode() if set(document) == {"raw"} else json.dumps(document).encode()
            self._send(status, {"Content-Type": "application/json"}, raw)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


# ---------------------------------------------------------------------------------------------- test helpers
EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "oauth-provider"


def build_example(dest: Path, *, manifest: str | None = None) -> Path:
    """A copy of examples/oauth-provider with its wasm built from the WAT (and, if given, another manifest)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "plugin.toml").write_text(manifest if manifest is not None else (EXAMPLE_DIR / "plugin.toml").read_text())
    (dest / "plugin.wasm").write_bytes(bytes(wasmtime.wat2wasm((EXAMPLE_DIR / "plugin.wat").read_text())))
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
