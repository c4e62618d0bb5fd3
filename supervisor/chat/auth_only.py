"""Auth-only mode (ABI §3.1): the plugin only hands out credentials (`provider_auth_credentials`) and the
supervisor talks to the model API itself, in the mode the credentials name:

* `openai_compat`: the plugin's endpoint as given, Chat Completions or the Responses API (openai_compat.py,
  responses_api.py);
* `cloud_code_assist` (the default, as in tark): native Gemini via Cloud Code Assist with the plugin's
  `project_id` (cloud_code_assist.py).

Each turn asks the plugin for credentials again (tokens expire), builds the request for that mode, and either
waits for the whole answer or streams it, handing each piece of text to the caller as it arrives.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Mapping, Protocol

import attrs
import httpx

from supervisor.consent.live import Consent
from supervisor.capabilities.netguard import literal_hosts
from supervisor.chat import cloud_code_assist, openai_compat, responses_api
from supervisor.chat.model_http import ModelApiLimits, ModelHttp, StatusMessage, llm_error, request_headers
from supervisor.chat.plugin_link import PluginLink
from supervisor.chat.provider import CREDENTIALS_EXPORT
from supervisor.chat.types import ChatError, ChatReply, Message, OnText, Usage, excerpt, json_kind

OPENAI_COMPAT = "openai_compat"
CLOUD_CODE_ASSIST = "cloud_code_assist"
DEFAULT_MODELS = {OPENAI_COMPAT: "gpt-4", CLOUD_CODE_ASSIST: cloud_code_assist.DEFAULT_MODEL}
DONE = "[DONE]"

Parsed = tuple[str, Usage | None, str | None]


@attrs.frozen
class AuthCredentials:
    access_token: str
    project_id: str | None = None
    api_mode: str = CLOUD_CODE_ASSIST
    endpoint: str | None = None
    custom_headers: dict[str, str] = attrs.field(factory=dict)


def parse_auth_credentials(text: str) -> AuthCredentials:
    bad = "Failed to parse auth credentials JSON: "
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ChatError(bad + str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise ChatError(bad + f"expected an object, got {json_kind(data)}")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ChatError(bad + "'access_token' must be a non-empty string")
    for key in ("project_id", "endpoint"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ChatError(bad + f"'{key}' must be a string or null")
    mode = data.get("api_mode")
    if mode is None:
        mode = CLOUD_CODE_ASSIST
    if not isinstance(mode, str):
        raise ChatError(bad + "'api_mode' must be a string")
    headers: Any = data.get("custom_headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ChatError(bad + "'custom_headers' must be an object of strings")
    return AuthCredentials(access_token=token, project_id=data.get("project_id"), api_mode=mode,
                           endpoint=data.get("endpoint"), custom_headers=dict(headers))


def check_mode(credentials: AuthCredentials, plugin: str) -> None:
    """What each mode needs is there (tark: a mode it does not know, or a missing field, means no provider)."""
    mode = credentials.api_mode
    if mode == OPENAI_COMPAT and not credentials.endpoint:
        raise ChatError(f"Plugin provider '{plugin}' uses api_mode '{OPENAI_COMPAT}' but its credentials have "
                        "no 'endpoint'")
    if mode == CLOUD_CODE_ASSIST and not credentials.project_id:
        raise ChatError(f"Plugin provider '{plugin}' uses api_mode '{CLOUD_CODE_ASSIST}' but its credentials have "
                        "no 'project_id'")
    if mode not in DEFAULT_MODELS:
        raise ChatError(f"Unsupported api_mode '{mode[:100]}' from plugin provider '{plugin}' "
                        f"(expected '{OPENAI_COMPAT}' or '{CLOUD_CODE_ASSIST}')")


class StreamParser(Protocol):
    api: str
    usage: Usage | None
    finish_reason: str | None

    def feed(self, event: dict[str, Any]) -> str: ...


@attrs.frozen
class Exchange:
    """One turn's request and how to read its answer."""

    url: httpx.URL
    headers: list[tuple[str, str]]
    body: dict[str, Any]
    api: str
    parse: Callable[[dict[str, Any]], Parsed]
    stream_parser: Callable[[], StreamParser]
    status_message: StatusMessage = llm_error


def openai_compat_exchange(plugin: str, url: httpx.URL, credentials: AuthCredentials, model: str,
                           messages: list[Message], *, stream: bool) -> Exchange:
    headers = request_headers(plugin, credentials.access_token, credentials.custom_headers)
    endpoint = credentials.endpoint or ""
    if openai_compat.uses_responses_api(endpoint):
        return Exchange(url, headers, responses_api.responses_body(endpoint, model, messages, stream=stream),
                        responses_api.RESPONSES_API, responses_api.parse_response, responses_api.ResponsesStream)
    return Exchange(url, headers, openai_compat.completions_body(model, messages, stream=stream), openai_compat.API,
                    openai_compat.parse_completion, openai_compat.CompletionsStream)


def code_assist_exchange(plugin: str, base: str, credentials: AuthCredentials, model: str,
                         messages: list[Message], *, stream: bool) -> Exchange:
    # tark sends no custom_headers in this mode
    headers = request_headers(plugin, credentials.access_token, {}, cloud_code_assist.CLIENT_HEADERS)
    body = cloud_code_assist.request_body(credentials.project_id or "", cloud_code_assist.normalize_model(model),
                                          messages)
    return Exchange(cloud_code_assist.method_url(base, stream=stream), headers, body, cloud_code_assist.API,
                    cloud_code_assist.parse_response, cloud_code_assist.CodeAssistStream,
                    llm_error if stream else cloud_code_assist.error_message)


def run_exchange(http: ModelHttp, exchange: Exchange, on_text: OnText | None) -> Parsed:
    """Without `on_text`: one JSON answer. With it: the event stream, each text piece handed over on arrival."""
    if on_text is None:
        data = http.post_json(exchange.url, exchange.headers, exchange.body, api=exchange.api,
                              status_message=exchange.status_message)
        return exchange.parse(data)
    parser = exchange.stream_parser()
    pieces: list[str] = []
    events = 0
    payloads = http.post_sse(exchange.url, exchange.headers, exchange.body, api=exchange.api,
                             status_message=exchange.status_message)
    with contextlib.closing(payloads):
        for payload in payloads:
            events += 1
            if payload == DONE:
                continue
            try:
                event = json.loads(payload)
            except (ValueError, RecursionError):
                raise ChatError(f"The {exchange.api} API sent a malformed event stream: a data line is not JSON: "
                                f"{excerpt(payload, 120)}") from None
            if not isinstance(event, dict):
                raise ChatError(f"The {exchange.api} API sent a malformed event stream: an event is "
                                f"{json_kind(event)}, not an object")
            text = parser.feed(event)
            if text:
                pieces.append(text)
                on_text(text)
    if not events:
        raise ChatError(f"The {exchange.api} API did not answer with an event stream (no 'data:' lines)")
    return "".join(pieces), parser.usage, parser.finish_reason


class AuthOnlyProvider:
    """Credentials come from the plugin afresh for every turn (tokens expire); the chat goes over HTTP."""

    def __init__(self, link: PluginLink, limits: ModelApiLimits = ModelApiLimits(),
                 environ: Mapping[str, str] = os.environ) -> None:
        self._link = link
        first = self._fetch()  # fail at start-up, before the user types anything
        credentials = first[0]
        check_mode(credentials, link.name)
        self.mode = credentials.api_mode
        self.default_model = DEFAULT_MODELS[self.mode]
        self._grants = Consent().grants(link.plugin)
        if self.mode == CLOUD_CODE_ASSIST:
            self._base = cloud_code_assist.base_url(environ)
            hosts = cloud_code_assist.override_host(environ)
            self._http = ModelHttp(lambda: hosts, limits)
        else:
            self._base = ""
            self._http = ModelHttp(lambda: literal_hosts(self._grants().literal_http_hosts), limits)
            try:
                self._url(credentials)
            except BaseException:
                self._http.close()
                raise
        self._first: tuple[AuthCredentials, int | None] | None = first

    def _fetch(self) -> tuple[AuthCredentials, int | None]:
        with self._link.instance() as instance:
            text, result = self._link.output(CREDENTIALS_EXPORT, [], instance)
        return parse_auth_credentials(text), result.worker_pid

    def _url(self, credentials: AuthCredentials) -> httpx.URL:
        return openai_compat.allowed_url(self._link.name, self._grants, credentials.endpoint or "")

    def chat(self, messages: list[Message], model: str, on_text: OnText | None = None) -> ChatReply:
        credentials, worker_pid = self._first or self._fetch()
        self._first = None
        check_mode(credentials, self._link.name)
        if credentials.api_mode != self.mode:
            raise ChatError(f"Plugin provider '{self._link.name}' switched from api_mode '{self.mode}' to "
                            f"'{credentials.api_mode}' during the chat; start the chat again")
        stream = on_text is not None
        if self.mode == CLOUD_CODE_ASSIST:
            exchange = code_assist_exchange(self._link.name, self._base, credentials, model, messages, stream=stream)
        else:
            exchange = openai_compat_exchange(self._link.name, self._url(credentials), credentials, model, messages,
                                              stream=stream)
        text, usage, finish_reason = run_exchange(self._http, exchange, on_text)
        if not text.strip():
            raise ChatError(f"The model API returned an empty response for model '{model}'")
        return ChatReply(text=text, usage=usage, finish_reason=finish_reason, worker_pid=worker_pid)

    def close(self) -> None:
        self._http.close()
