"""`tark chat` in auth-only mode against a real model API server on 127.0.0.1 (tests/model_server.py) that
records every request: the exact request of each shape tark speaks (Chat Completions, the Responses API of the
ChatGPT codex endpoint, Cloud Code Assist for Gemini), whole and streamed; a stream is printed as it arrives;
and a hostile server (endless, oversized, malformed) cannot hold or crash the chat."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time

import pytest

from model_server import ModelServer
from policy.grants import declared_only
from policy.manifest import Capabilities
from supervisor.chat import cloud_code_assist, responses_api
from supervisor.chat.model_http import ModelApiLimits, ModelHttp
from supervisor.chat.openai_compat import allowed_url
from supervisor.chat.sse import SseDecoder, SseError
from supervisor.chat.types import ChatError, Message
from test_chat import REPO, built_examples, hello_auth, install_guest, returning  # noqa: F401 - built_examples is a fixture

TOKEN = "tok-123"
GEMINI_TOKEN = "ya29.gemini-token"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with ModelServer() as running:
        monkeypatch.setenv("HELLO_TOKEN", TOKEN)
        yield running


def chat(cli, *args: str, ok: bool = True, **options):
    result = cli("chat", *args, **options)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def names(request) -> set[str]:
    return {name.lower() for name in request.header_names}


# --------------------------------------------------------------------------- Chat Completions


@pytest.fixture
def completions(cli, built_examples, tmp_path, server, monkeypatch) -> ModelServer:
    monkeypatch.setenv("HELLO_ENDPOINT", f"{server.url}/v1/chat/completions")
    hello_auth(cli, built_examples, tmp_path, http=[server.url])
    return server


def test_chat_completions_streamed_request_and_reply(cli, completions):
    result = chat(cli, "--provider", "hello", "--verbose", "--system", "be brief", "hi there")
    assert result.stdout == "gpt-4 heard: hi there\n"
    assert "Usage: 2 input tokens, 4 output tokens, 6 total, finish reason stop" in result.stderr
    (request,) = completions.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert names(request) == {"host", "content-length", "content-type", "authorization", "x-hello"}
    assert (request.headers["authorization"], request.headers["content-type"], request.headers["x-hello"]) == \
        (f"Bearer {TOKEN}", "application/json", "1")
    assert request.body == {"model": "gpt-4", "messages": [{"role": "system", "content": "be brief"},
                                                           {"role": "user", "content": "hi there"}],
                            "max_tokens": 4096, "stream": True}


def test_chat_completions_without_stream_for_scripts(cli, completions):
    reply = json.loads(chat(cli, "--provider", "hello", "--no-stream", "--json", "--model", "m-1", "hi").stdout)
    assert (reply["text"], reply["usage"], reply["finish_reason"], reply["mode"]) == \
        ("m-1 heard: hi", {"input_tokens": 1, "output_tokens": 3}, "stop", "openai_compat")
    assert completions.requests[0].body == {"model": "m-1", "messages": [{"role": "user", "content": "hi"}],
                                            "max_tokens": 4096}


def test_streamed_repl_keeps_the_conversation(cli, completions):
    done = chat(cli, "--provider", "hello", input="one\ntwo\n")
    assert done.stdout == "> gpt-4 heard: one\n> gpt-4 heard: two\n> \n"
    assert completions.requests[1].body["messages"] == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "gpt-4 heard: one"},
        {"role": "user", "content": "two"}]


# --------------------------------------------------------------------------- Responses API (ChatGPT codex endpoint)


@pytest.fixture
def codex(cli, built_examples, tmp_path, server, monkeypatch) -> ModelServer:
    """hello-auth returning an endpoint shaped like the published ChatGPT provider's."""
    monkeypatch.setenv("HELLO_ENDPOINT", f"{server.url}/backend-api/codex/responses")
    hello_auth(cli, built_examples, tmp_path, http=[server.url])
    return server


def test_codex_endpoint_speaks_the_responses_api_streamed(cli, codex):
    result = chat(cli, "--provider", "hello", "--model", "gpt-5-codex", "--verbose", "hi")
    assert result.stdout == "gpt-5-codex heard: hi\n"
    assert "Usage: 1 input tokens, 3 output tokens, 4 total, finish reason completed" in result.stderr
    (request,) = codex.requests
    assert request.path == "/backend-api/codex/responses"  # as given: nothing appended
    assert names(request) == {"host", "content-length", "content-type", "authorization", "x-hello"}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    # a codex model without a system prompt gets tark's default instructions
    assert request.body == {"model": "gpt-5-codex", "input": [{"role": "user", "content": "hi"}],
                            "instructions": "You are a helpful coding assistant.", "max_output_tokens": 4096,
                            "stream": True, "store": False}


def test_responses_api_whole_reply_with_system_prompts_as_instructions(cli, codex):
    done = chat(cli, "--provider", "hello", "--no-stream", "--system", "be brief", input="one\ntwo\n")
    assert done.stdout == "> gpt-4 heard: one\n> gpt-4 heard: two\n> \n"
    assert codex.requests[1].body == {
        "model": "gpt-4", "instructions": "be brief", "max_output_tokens": 4096, "store": False,
        "input": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "gpt-4 heard: one"},
                  {"role": "user", "content": "two"}]}


def test_responses_request_for_the_published_chatgpt_endpoint():
    # tark leaves max_output_tokens out for chatgpt.com's codex backend, which refuses it; system messages join
    body = responses_api.responses_body("https://chatgpt.com/backend-api/codex/responses", "gpt-5",
                                        [Message("system", "a"), Message("system", "b"), Message("user", "hi"),
                                         Message("tool", "42")], stream=True)
    assert json.dumps(body) == json.dumps({
        "model": "gpt-5", "input": [{"role": "user", "content": "hi"},
                                    {"role": "user", "content": "[Tool result]:\n42"}],
        "instructions": "a\n\nb", "stream": True, "store": False})


def test_any_endpoint_with_responses_in_its_path_uses_that_shape(cli, built_examples, tmp_path, server,
                                                                monkeypatch):
    monkeypatch.setenv("HELLO_ENDPOINT", f"{server.url}/v1/responses")
    hello_auth(cli, built_examples, tmp_path, http=[server.url])
    assert chat(cli, "--provider", "hello", "--no-stream", "hi").stdout == "gpt-4 heard: hi\n"
    assert server.requests[0].body == {"model": "gpt-4", "input": [{"role": "user", "content": "hi"}],
                                       "max_output_tokens": 4096, "store": False}


def test_credentials_shaped_like_the_published_chatgpt_providers(cli, tmp_path, server):
    # the chatgpt-oauth plugin returns an extra account_id and its own headers; only the endpoint differs here
    credentials = ('{"access_token":"eyJ-chatgpt","account_id":"acct-7","api_mode":"openai_compat","endpoint":"'
                   + server.url + '/backend-api/codex/responses","custom_headers":{"originator":"opencode",'
                   '"ChatGPT-Account-Id":"acct-7"}}')
    install_guest(cli, tmp_path, "chatgpt-like", returning("provider_auth_credentials", "", credentials),
                  capabilities=f'http = ["{server.url}"]')
    assert chat(cli, "--provider", "chatgpt-like", "--model", "gpt-5-codex", "hi").stdout == \
        "gpt-5-codex heard: hi\n"
    (request,) = server.requests
    assert request.path == "/backend-api/codex/responses"
    assert names(request) == {"host", "content-length", "content-type", "authorization", "originator",
                              "chatgpt-account-id"}
    assert (request.headers["authorization"], request.headers["originator"], request.headers["chatgpt-account-id"]) \
        == ("Bearer eyJ-chatgpt", "opencode", "acct-7")
    assert request.body["instructions"] == "You are a helpful coding assistant." and request.body["stream"] is True


def test_the_published_chatgpt_endpoint_needs_chatgpt_com_in_the_grants():
    endpoint = "https://chatgpt.com/backend-api/codex/responses"
    published = declared_only("chatgpt-oauth", Capabilities(http=("auth.openai.com", "chatgpt.com")))
    assert str(allowed_url("chatgpt-oauth", lambda: published, endpoint)) == endpoint  # verbatim
    other = declared_only("chatgpt-oauth", Capabilities(http=("auth.openai.com",)))
    with pytest.raises(ChatError, match=f"send the conversation and its token to {endpoint}, which its http grants"):
        allowed_url("chatgpt-oauth", lambda: other, endpoint)


# --------------------------------------------------------------------------- Cloud Code Assist (Gemini)


GEMINI_CREDENTIALS = ('{"access_token":"' + GEMINI_TOKEN + '","project_id":"proj-42",'
                      '"api_mode":"cloud_code_assist","endpoint":null,"custom_headers":{"X-Ignored":"1"}}')


@pytest.fixture
def gemini(cli, tmp_path, server, monkeypatch) -> ModelServer:
    """A provider plugin whose provider_auth_credentials is the published Gemini provider's shape; the
    documented override points the client at the local server."""
    install_guest(cli, tmp_path, "gem", returning("provider_auth_credentials", "", GEMINI_CREDENTIALS))
    monkeypatch.setenv(cloud_code_assist.ENDPOINT_ENV, f"{server.url}/v1internal")
    return server


def code_assist_headers(request) -> None:
    assert names(request) == {"host", "content-length", "content-type", "authorization", "user-agent",
                              "x-goog-api-client", "client-metadata"}
    assert request.headers["authorization"] == f"Bearer {GEMINI_TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "google-api-nodejs-client/9.15.1"
    assert request.headers["x-goog-api-client"] == "gl-node/22.17.0"
    assert request.headers["client-metadata"] == \
        "ideType=IDE_UNSPECIFIED,platform=PLATFORM_UNSPECIFIED,pluginType=GEMINI"


def test_gemini_cloud_code_assist_streamed(cli, gemini):
    result = chat(cli, "--provider", "gem", "--verbose", "--system", "be brief", "hi there")
    assert result.stdout == "gemini-2.0-flash heard: hi there\n"
    assert "Usage: 1 input tokens, 4 output tokens, 5 total, finish reason STOP" in result.stderr
    (request,) = gemini.requests
    assert request.path == "/v1internal:streamGenerateContent?alt=sse"
    code_assist_headers(request)
    assert request.body == {"model": "gemini-2.0-flash", "project": "proj-42", "request": {
        "contents": [{"role": "user", "parts": [{"text": "hi there"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 8192, "temperature": 1.0}}}


def test_gemini_cloud_code_assist_whole_reply_and_history(cli, gemini):
    done = chat(cli, "--provider", "gem", "--no-stream", "--json", "--model", "gemini-2.0-flash-exp",
                input="one\ntwo\n")
    first, second = (json.loads(line.removeprefix("> ")) for line in done.stdout.splitlines()[:2])
    # tark drops the experimental suffix Cloud Code Assist refuses
    assert (first["text"], first["mode"], first["usage"]) == \
        ("gemini-2.0-flash heard: one", "cloud_code_assist", {"input_tokens": 1, "output_tokens": 3})
    assert second["text"] == "gemini-2.0-flash heard: two"
    request = gemini.requests[1]
    assert request.path == "/v1internal:generateContent"
    code_assist_headers(request)
    assert request.body == {"model": "gemini-2.0-flash", "project": "proj-42", "request": {
        "contents": [{"role": "user", "parts": [{"text": "one"}]},
                     {"role": "model", "parts": [{"text": "gemini-2.0-flash heard: one"}]},
                     {"role": "user", "parts": [{"text": "two"}]}],
        "generationConfig": {"maxOutputTokens": 8192, "temperature": 1.0}}}


def test_gemini_errors_use_tarks_texts(cli, gemini):
    gemini.behaviour = "error"
    result = chat(cli, "--provider", "gem", "--no-stream", "hi", ok=False)
    assert result.exit_code == 1
    assert ('Error: Cloud Code Assist API error (500 Internal Server Error): {"error":{"message":"the model is on '
            'fire"}}') in result.output
    gemini.behaviour = "unauthorized"
    result = chat(cli, "--provider", "gem", "hi", ok=False)
    assert 'Error: Unauthorized: {"error":{"message":"token expired"}}' in result.output
    assert GEMINI_TOKEN not in result.output


def test_gemini_default_endpoint_is_googles_and_a_bad_override_is_named():
    assert str(cloud_code_assist.method_url(cloud_code_assist.base_url({}), stream=True)) == \
        "https://cloudcode-pa.googleapis.com/v1internal:streamGenerateContent?alt=sse"
    with pytest.raises(ChatError, match=f"{cloud_code_assist.ENDPOINT_ENV}='ftp://x' must be an http"):
        cloud_code_assist.base_url({cloud_code_assist.ENDPOINT_ENV: "ftp://x"})


# --------------------------------------------------------------------------- streaming as it arrives


def read_until(fd: int, wanted: bytes, timeout_s: float) -> bytes:
    seen = b""
    end = time.monotonic() + timeout_s
    while wanted not in seen:
        left = end - time.monotonic()
        assert left > 0, f"never saw {wanted!r}; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"stdout closed before {wanted!r}; got {seen!r}"
            seen += chunk
    return seen


@contextlib.contextmanager
def tark_process(tark_argv: list[str], *args: str):
    process = subprocess.Popen([*tark_argv, "chat", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env=dict(os.environ), cwd=REPO)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("shape", ["completions", "codex", "gemini"])
def test_a_stream_is_printed_as_it_arrives(request, tark_argv, shape):
    # the server sends the first word, then waits until the test has seen it on tark's stdout
    server = request.getfixturevalue(shape)
    server.behaviour = "gated"
    provider, model = ("gem", b"gemini-2.0-flash") if shape == "gemini" else ("hello", b"gpt-4")
    with tark_process(tark_argv, "--provider", provider, "hello world") as process:
        first = read_until(process.stdout.fileno(), model, 60)  # the first word, alone
        assert server.first_sent.is_set() and b"heard" not in first
        server.gate.set()
        rest = process.stdout.read()
        assert process.wait(timeout=60) == 0, process.stderr.read()
    assert (first + rest).decode().endswith(" heard: hello world\n")


def test_ctrl_c_during_a_stream_exits_130(tark_argv, completions):
    completions.behaviour = "gated"
    with tark_process(tark_argv, "--provider", "hello", "hi") as process:
        read_until(process.stdout.fileno(), b"gpt-4", 60)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert b"Interrupted." in process.stderr.read()


# --------------------------------------------------------------------------- a hostile server


def test_terminal_controls_in_a_streamed_reply_are_escaped(cli, completions):
    # the server echoes the question, so the reply carries an escape sequence the user did not see coming
    result = chat(cli, "--provider", "hello", "\x1b[2Jcleared")
    assert "\x1b" not in result.stdout and result.stdout == "gpt-4 heard: \\x1b[2Jcleared\n"


def test_event_stream_lines_are_decoded_as_tark_decodes_them():
    decoder = SseDecoder(max_line_bytes=64)
    euro = "€".encode()
    assert decoder.push(b": comment\r\nevent: x\r\ndata: {\"a\":1}\r\n\r\ndata:  " + euro[:1]) == ['{"a":1}']
    assert decoder.push(euro[1:] + b" \n") == ["€"]  # a character split across chunks is decoded whole
    assert decoder.push(b"data: [DONE]") == [] and decoder.finish() == ["[DONE]"]
    with pytest.raises(SseError, match="longer than 64 bytes"):
        for _ in range(10):
            decoder.push(b"data: " + b"x" * 10)


def http_client(server: ModelServer, **limits) -> ModelHttp:
    return ModelHttp(lambda: frozenset({"127.0.0.1"}), ModelApiLimits(**limits))


def stream_all(client: ModelHttp, server: ModelServer) -> list[str]:
    with contextlib.closing(client):
        return list(client.post_sse(server.url + "/v1/chat/completions", [], {"stream": True, "model": "m"},
                                    api="openai-compat"))


def test_an_endless_stream_ends_at_the_deadline(server):
    server.behaviour = "endless"
    started = time.monotonic()
    with pytest.raises(ChatError, match=r"did not answer within 0\.5 s"):
        stream_all(http_client(server, total_timeout_s=0.5), server)
    assert time.monotonic() - started < 3


def test_a_silent_server_ends_at_the_deadline(server):
    server.behaviour, server.delay_s = "slow", 10
    started = time.monotonic()
    with pytest.raises(ChatError, match=r"did not answer within 0\.4 s"):
        stream_all(http_client(server, total_timeout_s=0.4), server)
    assert time.monotonic() - started < 3


def test_the_timeout_option_is_the_deadline_of_a_streamed_reply(cli, completions):
    completions.behaviour = "endless"
    started = time.monotonic()
    result = chat(cli, "--provider", "hello", "--timeout", "1", "hi", ok=False)
    assert result.exit_code == 1 and time.monotonic() - started < 10
    assert "Error: Network error: Request timeout: the openai-compat API at" in result.output
    assert "did not answer within 1 s" in result.output
    assert result.stdout.startswith("gpt-4gpt-4gpt-4") and result.stdout.endswith("\n")  # printed, line ended


def test_an_endless_stream_ends_at_the_size_cap(server):
    server.behaviour = "endless"
    with pytest.raises(ChatError, match="larger than 20000 bytes"):
        stream_all(http_client(server, max_response_bytes=20_000), server)


def test_an_endless_line_ends_at_the_line_cap(server):
    server.behaviour = "endless_line"
    with pytest.raises(ChatError, match="malformed event stream: an event stream line is longer than 50000 bytes"):
        stream_all(http_client(server, max_line_bytes=50_000), server)


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("malformed", "The openai-compat API sent a malformed event stream: a data line is not JSON: {this is not"),
        ("no_events", "The openai-compat API did not answer with an event stream (no 'data:' lines)"),
        ("huge", "The openai-compat API response is larger than"),
    ],
)
def test_malformed_streams_are_one_clear_error(cli, completions, behaviour, message):
    completions.behaviour = behaviour
    completions.huge_bytes = 9 * 1024 * 1024
    result = chat(cli, "--provider", "hello", "hi", ok=False)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output and "Traceback" not in result.output
