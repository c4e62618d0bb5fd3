"""The local listener that receives the browser's redirect after the user signs in (PKCE).

It serves one path on 127.0.0.1 in the calling thread (no background thread to own): `wait` handles requests
one at a time until the redirect arrives or the deadline passes. The `state` is checked in constant time
(weakness 27: tark never checked it).
"""

from __future__ import annotations

import hmac
import html
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import attrs

from supervisor.oauth.errors import OAuthError, quoted
from supervisor.oauth.pkce import RedirectTarget

LISTEN_HOST = "127.0.0.1"
REQUEST_READ_TIMEOUT_S = 5.0  # a client that connects and sends nothing must not stall the flow

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tark</title></head>
<body style="font-family: sans-serif; margin: 3em"><h2>{title}</h2><p>{text}</p></body></html>
"""


@attrs.frozen
class CallbackOutcome:
    code: str | None
    error: str | None


def evaluate_callback(query: str, expected_state: str | None) -> CallbackOutcome:
    """Decide what a redirect's query means: the authorization code, or why the sign-in failed."""
    params = parse_qs(query, keep_blank_values=True)
    repeated = sorted(key for key, values in params.items() if len(values) > 1)
    if repeated:
        return CallbackOutcome(None, f"The authorization callback repeats the parameter(s) {', '.join(repeated)}")
    value = {key: values[0] for key, values in params.items()}
    if "error" in value:
        detail = f" ({quoted(value['error_description'])})" if value.get("error_description") else ""
        return CallbackOutcome(None, f"The authorization server refused the sign-in: {quoted(value['error'])}{detail}")
    if expected_state is not None:
        got = value.get("state")
        if got is None:
            return CallbackOutcome(None, "The authorization callback has no state parameter; refusing it")
        if not hmac.compare_digest(got.encode("utf-8", "surrogatepass"), expected_state.encode("ascii")):
            return CallbackOutcome(
                None, "OAuth state mismatch: the authorization callback does not belong to this sign-in "
                      "(possible cross-site request forgery). Please try again."
            )
    if not value.get("code"):
        return CallbackOutcome(None, "The authorization callback has no code parameter")
    return CallbackOutcome(value["code"], None)


class _Server(HTTPServer):
    def __init__(self, target: RedirectTarget, expected_state: str | None) -> None:
        self.expected_path = target.path
        self.expected_state = expected_state
        self.outcome: CallbackOutcome | None = None
        super().__init__((LISTEN_HOST, target.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_READ_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path != self.server.expected_path or self.server.outcome is not None:
            self._answer(404, "Not found", "This address only receives tark's sign-in redirect.")
            return
        outcome = evaluate_callback(url.query, self.server.expected_state)
        self.server.outcome = outcome
        if outcome.error is None:
            self._answer(200, "Signed in", "Authentication complete. You can close this window and return to tark.")
        else:
            self._answer(400, "Sign-in failed", outcome.error)

    def _answer(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence http.server's stderr log
        pass


class CallbackListener:
    """Bound on entry (before the browser is sent anywhere), closed on exit."""

    def __init__(self, target: RedirectTarget, expected_state: str | None) -> None:
        self.target = target
        self._expected_state = expected_state
        self._server: _Server | None = None

    def __enter__(self) -> "CallbackListener":
        try:
            self._server = _Server(self.target, self._expected_state)
        except OSError as exc:
            raise OAuthError(
                f"Cannot listen on {LISTEN_HOST}:{self.target.port} (the port of redirect_uri): "
                f"{exc.strerror or exc}"
            ) from None
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.server_close()

    def wait(self, timeout_s: float) -> str:
        """The authorization code; OAuthError on a refused or forged callback, or after `timeout_s`."""
        assert self._server is not None, "use CallbackListener as a context manager"
        deadline = time.monotonic() + timeout_s
        while self._server.outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OAuthError(
                    f"Authentication timeout - no response after {format_seconds(timeout_s)} seconds. "
                    "Please try again."
                )
            self._server.timeout = remaining
            self._server.handle_request()
        outcome = self._server.outcome
        if outcome.error is not None:
            raise OAuthError(outcome.error)
        assert outcome.code is not None
        return outcome.code


def format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
