"""The 15 `tark:*` host imports of the tark core ABI (tark-core-abi.md §1), as forwarding stubs.

Each import reads its string arguments from the guest's `memory` export with full bounds checks (negative or
overflowing ptr/len -> -1 instead of tark's host panic, weakness 4), rejects invalid UTF-8 with -1, forwards one
host request to the supervisor through a `HostBridge`, and writes the reply at `ret_ptr` only if it fits in guest
memory. Imports never raise: an exception crossing wasmtime travels through a module global (see the notes).
"""

from __future__ import annotations

from typing import Callable, Protocol

import attrs
import wasmtime

from worker import protocol

READ_FAILURE = -1
FS_WRITE_FAILURE = -4
LOG_LEVELS = ("debug", "info", "warn", "error")


class HostBridge(Protocol):
    def request(self, build: Callable[[int], protocol.HostRequest]) -> protocol.HostReply | None:
        """Send `build(host_call_id)` and wait for its reply; None if no reply can come (supervisor gone)."""

    def log(self, level: str, message: str) -> None:
        """Forward one tark:log line (one-way)."""


@attrs.frozen
class _Forward:
    """One forwarding import: `i64_args` leading i64 values, `strings` (ptr,len) pairs, then maybe a ret_ptr."""

    module: str
    name: str
    build: Callable[..., protocol.HostRequest]
    strings: int
    i64_args: int = 0
    has_ret: bool = True
    write_failure: int = READ_FAILURE

    def func_type(self) -> wasmtime.FuncType:
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        params = [i64] * self.i64_args + [i32] * (2 * self.strings + (1 if self.has_ret else 0))
        return wasmtime.FuncType(params, [i32])


P = protocol
FORWARDS: tuple[_Forward, ...] = (
    _Forward("tark:storage", "get", lambda h, key: P.StorageGet(h, key), strings=1),
    _Forward("tark:storage", "set", lambda h, key, value: P.StorageSet(h, key, value), strings=2, has_ret=False),
    _Forward("tark:storage", "delete", lambda h, key: P.StorageDelete(h, key), strings=1, has_ret=False),
    _Forward("tark:http", "get", lambda h, url, hdr: P.HttpGet(h, url, hdr), strings=2),
    _Forward("tark:http", "post", lambda h, url, body, hdr: P.HttpPost(h, url, body, hdr), strings=3),
    _Forward("tark:ws", "connect", lambda h, url, hdr: P.WsConnect(h, url, hdr), strings=2),
    _Forward("tark:ws", "send", lambda h, handle, data: P.WsSend(h, handle, data), strings=1, i64_args=1),
    _Forward("tark:ws", "recv", lambda h, handle, t, m: P.WsRecv(h, handle, t, m), strings=0, i64_args=3),
    _Forward("tark:ws", "close", lambda h, handle: P.WsClose(h, handle), strings=0, i64_args=1),
    _Forward("tark:env", "get", lambda h, name: P.EnvGet(h, name), strings=1),
    _Forward("tark:fs", "read", lambda h, path: P.FsRead(h, path), strings=1, write_failure=FS_WRITE_FAILURE),
)
IMPORT_NAMES: tuple[tuple[str, str], ...] = tuple((f.module, f.name) for f in FORWARDS) + tuple(
    ("tark:log", level) for level in LOG_LEVELS
)


def define_tark_imports(linker: wasmtime.Linker, bridge: HostBridge) -> None:
    for forward in FORWARDS:
        linker.define_func(forward.module, forward.name, forward.func_type(), _forwarder(forward, bridge), True)
    log_type = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i32()], [])
    for level in LOG_LEVELS:
        linker.define_func("tark:log", level, log_type, _logger(level, bridge), True)


def guest_memory(caller: wasmtime.Caller) -> wasmtime.Memory | None:
    memory = caller.get("memory")
    return memory if isinstance(memory, wasmtime.Memory) else None


def read_bytes(store: wasmtime.Caller | wasmtime.Store, memory: wasmtime.Memory, ptr: int, length: int) -> bytes | None:
    """[ptr, ptr+length) of guest memory, or None if any part of it lies outside memory."""
    if ptr < 0 or length < 0 or length > protocol.MAX_PAYLOAD_BYTES:
        return None
    if ptr + length > memory.data_len(store):
        return None
    if length == 0:
        return b""
    return bytes(memory.read(store, ptr, ptr + length))


def read_text(caller: wasmtime.Caller, memory: wasmtime.Memory, ptr: int, length: int) -> str | None:
    data = read_bytes(caller, memory, ptr, length)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def write_result(caller: wasmtime.Caller, memory: wasmtime.Memory, ret_ptr: int, data: bytes) -> bool:
    """Write `data` at ret_ptr if it ends inside memory (an empty result still needs ret_ptr <= memory size)."""
    if ret_ptr < 0 or ret_ptr + len(data) > memory.data_len(caller):
        return False
    if data:
        memory.write(caller, data, ret_ptr)
    return True


def _forwarder(forward: _Forward, bridge: HostBridge) -> Callable[..., int]:
    n64 = forward.i64_args

    def host_function(caller: wasmtime.Caller, *args: int) -> int:
        try:
            memory = guest_memory(caller)
            if memory is None:
                return READ_FAILURE
            texts = []
            for i in range(forward.strings):
                text = read_text(caller, memory, args[n64 + 2 * i], args[n64 + 2 * i + 1])
                if text is None:
                    return READ_FAILURE
                texts.append(text)
            leading = args[:n64]
            reply = bridge.request(lambda host_call_id: forward.build(host_call_id, *leading, *texts))
            if reply is None:
                return READ_FAILURE
            if reply.code < 0:
                return reply.code
            if not forward.has_ret:
                return 0
            if not write_result(caller, memory, args[-1], reply.data):
                return forward.write_failure
            return len(reply.data)
        except Exception:  # never let anything cross into wasmtime
            return READ_FAILURE

    return host_function


def _logger(level: str, bridge: HostBridge) -> Callable[..., None]:
    def host_function(caller: wasmtime.Caller, ptr: int, length: int) -> None:
        try:
            memory = guest_memory(caller)
            message = None if memory is None else read_text(caller, memory, ptr, length)
            if message is not None:
                bridge.log(level, message)
        except Exception:
            pass

    return host_function
