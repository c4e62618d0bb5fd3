"""The imports of wit/tark.wit for components, forwarded over the same broker as the core ABI's `tark:*` imports.

Each WIT function sends exactly the protocol request its core-ABI twin sends (worker/abi.py), so the supervisor
answers it with the same capability handler, grants, limits, deadline and audit and cannot tell which ABI asked;
only the reply is turned into the WIT's types here (docs/components.md has the table).

Nothing here raises into wasmtime: an exception in a component host function poisons the whole Store. Every
function returns the WIT's error value instead (`err`, `none`), and a function whose result type a component
declared differently fails its own conversion, which is contained like a trap (the call fails, the Store goes).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from wasmtime.component import Linker, Variant

from policy import abi, tark_json
from worker import protocol
from worker.abi import LOG_LEVELS, HostBridge
from worker.component_values import make_record

NOT_ALLOWED = -2
READ_ERROR = -3
P = protocol


def define_imports(linker: Linker, bridge: HostBridge) -> None:
    """Define every interface of wit/tark.wit that a plugin may import (a world only narrows what it imports)."""
    forwarder = _Forwarder(bridge)
    with linker.root() as root:
        for interface, functions in forwarder.interfaces().items():
            with root.add_instance(abi.interface_name(interface)) as instance:
                for name, fn in functions.items():
                    instance.add_func(name, _never_raises(fn, _FALLBACKS[(interface, name)]))


def _never_raises(fn: Callable[..., Any], fallback: Any) -> Callable[..., Any]:
    def host_function(_store: object, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - see the module docstring
            return fallback
    return host_function


_ERR = "the host could not complete the request"
# What a host function returns if building its answer fails (a bug of ours or a malformed reply).
_FALLBACKS: dict[tuple[str, str], Any] = {
    ("storage", "get"): None,
    ("storage", "set"): _ERR,
    ("storage", "delete"): _ERR,
    ("storage", "list-keys"): [],
    ("http", "get"): _ERR,
    ("http", "post"): _ERR,
    ("ws", "connect"): _ERR,
    ("ws", "send"): _ERR,
    ("ws", "recv"): _ERR,
    ("ws", "close"): None,
    ("env", "get"): None,
    ("fs", "read"): Variant("err", _ERR),
    **{("log", level): None for level in LOG_LEVELS},
}


class _Forwarder:
    def __init__(self, bridge: HostBridge) -> None:
        self._bridge = bridge

    def interfaces(self) -> dict[str, dict[str, Callable[..., Any]]]:
        return {
            "storage": {"get": self.storage_get, "set": self.storage_set, "delete": self.storage_delete,
                        "list-keys": self.storage_list_keys},
            "http": {"get": self.http_get, "post": self.http_post},
            "ws": {"connect": self.ws_connect, "send": self.ws_send, "recv": self.ws_recv, "close": self.ws_close},
            "env": {"get": self.env_get},
            "fs": {"read": self.fs_read},
            "log": {level: self._logger(level) for level in LOG_LEVELS},
        }

    def _ask(self, build: Callable[[int], protocol.HostRequest]) -> protocol.HostReply | None:
        return self._bridge.request(build)

    # storage ------------------------------------------------------------------------------------------------

    def storage_get(self, key: str) -> str | None:
        return _text_or_none(self._ask(lambda h: P.StorageGet(h, key)))

    def storage_set(self, key: str, value: str) -> str | None:
        return _unit(self._ask(lambda h: P.StorageSet(h, key, value)), "storage.set")

    def storage_delete(self, key: str) -> str | None:
        return _unit(self._ask(lambda h: P.StorageDelete(h, key)), "storage.delete")

    def storage_list_keys(self) -> list[str]:
        reply = self._ask(lambda h: P.StorageListKeys(h))
        if reply is None or reply.code < 0 or not reply.data:
            return []
        keys = json.loads(reply.data)
        return [k for k in keys if isinstance(k, str)]

    # http ---------------------------------------------------------------------------------------------------

    def http_get(self, url: str, headers: list[tuple[str, str]]) -> Any:
        return _http(self._ask(lambda h: P.HttpGet(h, url, _pairs(headers))))

    def http_post(self, url: str, body: str, headers: list[tuple[str, str]]) -> Any:
        return _http(self._ask(lambda h: P.HttpPost(h, url, body, _pairs(headers))))

    # ws -----------------------------------------------------------------------------------------------------

    def ws_connect(self, url: str, headers: list[tuple[str, str]]) -> int | str:
        reply = self._ask(lambda h: P.WsConnect(h, url, _pairs(headers)))
        value = _ws_json(reply, f"not allowed: {url}")
        if isinstance(value, str):
            return value
        handle = value.get("handle")
        return handle if value.get("ok") is True and isinstance(handle, int) else str(value.get("error"))

    def ws_send(self, handle: int, data: str) -> str | None:
        value = _ws_json(self._ask(lambda h: P.WsSend(h, handle, data)), "not allowed")
        if isinstance(value, str):
            return value
        return None if value.get("ok") is True else str(value.get("error"))

    def ws_recv(self, handle: int, timeout_ms: int, max_bytes: int) -> Any:
        value = _ws_json(self._ask(lambda h: P.WsRecv(h, handle, timeout_ms, max_bytes)), "not allowed")
        if isinstance(value, str):
            return value
        if value.get("ok") is not True:
            return str(value.get("error"))
        message, error = value.get("message"), value.get("error")
        return make_record(message=message if isinstance(message, str) else None, closed=value.get("closed") is True,
                           error=error if isinstance(error, str) else None)

    def ws_close(self, handle: int) -> None:
        self._ask(lambda h: P.WsClose(h, handle))

    # env, fs, log -------------------------------------------------------------------------------------------

    def env_get(self, name: str) -> str | None:
        return _text_or_none(self._ask(lambda h: P.EnvGet(h, name)))

    def fs_read(self, path: str) -> Variant:
        reply = self._ask(lambda h: P.FsRead(h, path))
        if reply is None or reply.code == -1:
            return Variant("err", f"cannot read {path}: the request failed")
        if reply.code == NOT_ALLOWED:
            return Variant("err", f"not allowed: {path} is not in capabilities.fs_read")
        if reply.code == READ_ERROR:
            return Variant("err", f"cannot read {path}: missing, not a file, unreadable or not UTF-8")
        if reply.code < 0:
            return Variant("err", f"cannot read {path} (code {reply.code})")
        return Variant("ok", reply.data.decode("utf-8"))

    def _logger(self, level: str) -> Callable[[str], None]:
        return lambda message: self._bridge.log(level, message)


def _text_or_none(reply: protocol.HostReply | None) -> str | None:
    """`option<string>` from a reply as the core ABI reads it: a negative code or no bytes is none (the core
    ABI cannot tell an absent value from an empty one either)."""
    if reply is None or reply.code < 0 or not reply.data:
        return None
    return reply.data.decode("utf-8")


def _pairs(headers: list[tuple[str, str]]) -> str:
    """The core ABI's header JSON, `[["name","value"],...]`, which the http and ws handlers parse."""
    return tark_json.dumps([[name, value] for name, value in headers])


def _unit(reply: protocol.HostReply | None, op: str) -> str | None:
    """`result<_, string>`: None is ok, a string the error (wasmtime-py's plain form of this result)."""
    if reply is None:
        return f"{op} failed: the supervisor did not answer"
    if reply.code < 0:
        return f"{op} failed (refused, over a limit, or a storage error)"
    return None


def _http(reply: protocol.HostReply | None) -> Any:
    """`result<response, http-error>`: a Record is ok; None is the `not-allowed` error, a string `transport`."""
    if reply is None:
        return "the supervisor did not answer"
    if reply.code == NOT_ALLOWED:
        return None
    if reply.code < 0:
        return f"request failed (code {reply.code})"
    value = json.loads(reply.data)
    if "error" in value:
        return str(value["error"])
    return make_record(status=int(value["status"]), headers=[(str(n), str(v)) for n, v in value["headers"]],
                       body=str(value["body"]))


def _ws_json(reply: protocol.HostReply | None, denied: str) -> dict[str, Any] | str:
    if reply is None:
        return "the supervisor did not answer"
    if reply.code == NOT_ALLOWED:
        return denied
    if reply.code < 0:
        return f"websocket request failed (code {reply.code})"
    value = json.loads(reply.data)
    return value if isinstance(value, dict) else "malformed websocket reply"
