"""The 15 `tark:*` host imports of the tark core ABI (tark-core-abi.md §1), as forwarding stubs.

Each import reads its string arguments from the guest's `memory` export with full bounds checks (negative or
overflowing ptr/len -> -1 instead of tark's host panic, weakness 4), rejects invalid UTF-8 with -1, forwards one
host request to the supervisor through a `HostBridge`, and writes the reply at `ret_ptr` only if it fits in guest
memory. Imports never raise: an exception crossing wasmtime travels through a module global (see the notes).
"""

from __future__ import annotations

import ctypes
import itertools
from typing import Callable, Protocol

import attrs
import wasmtime
from wasmtime import _ffi as ffi

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
        _define_raw(linker, forward.module, forward.name, forward.func_type(), _forwarder(forward, bridge))
    log_type = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i32()], [])
    for level in LOG_LEVELS:
        _define_raw(linker, "tark:log", level, log_type, _logger(level, bridge))


# The imports are defined through wasmtime's unchecked C callback rather than `Linker.define_func`: wasmtime-py's
# generic trampoline builds a Caller object and converts every argument and the i32 result through `Val`
# (≈8 µs of a host call's ≈20 µs of Python). Here the callback reads the raw arguments and writes the raw result;
# memory is reached through the caller's `memory` export with the same bounds checks as before.
_RawHandler = Callable[["ctypes._Pointer[ffi.wasmtime_caller_t]", "ctypes._Pointer[ffi.wasmtime_val_raw_t]"], None]
_HANDLERS: dict[int, _RawHandler] = {}
_next_handler = itertools.count(1)


@ffi.wasmtime_func_unchecked_callback_t
def _raw_trampoline(env, caller, values, count):  # type: ignore[no-untyped-def]
    try:
        _HANDLERS[env](caller, values)
    except BaseException:  # a handler never raises; nothing may cross into wasmtime in any case
        pass
    return 0  # no trap


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _raw_finalize(env):  # type: ignore[no-untyped-def]
    _HANDLERS.pop(env, None)


def _define_raw(linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, handler: _RawHandler) -> None:
    key = next(_next_handler)
    _HANDLERS[key] = handler
    module_bytes, name_bytes = module.encode(), name.encode()
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        ctypes.create_string_buffer(module_bytes),
        len(module_bytes),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        ty.ptr(),
        _raw_trampoline,
        key,
        _raw_finalize,
    )
    if error:
        _HANDLERS.pop(key, None)
        raise wasmtime.WasmtimeError._from_ptr(error)


_MEMORY_EXPORT = ctypes.create_string_buffer(b"memory")
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value


class _CallerMemory:
    """The calling instance's `memory` export, seen from inside one host call (the guest cannot run, so cannot
    grow its memory, until the call returns)."""

    __slots__ = ("_context", "_memory")

    def __init__(self, context: object, memory: object) -> None:
        self._context = context
        self._memory = memory

    @classmethod
    def of(cls, caller: object) -> _CallerMemory | None:
        item = ffi.wasmtime_extern_t()
        if not ffi.wasmtime_caller_export_get(caller, _MEMORY_EXPORT, 6, ctypes.byref(item)):
            return None
        if item.kind != _EXTERN_MEMORY:
            return None
        return cls(ffi.wasmtime_caller_context(caller), ctypes.byref(item.of.memory))

    def size(self) -> int:
        return ffi.wasmtime_memory_data_size(self._context, self._memory)

    def _base(self) -> int:
        return ctypes.cast(ffi.wasmtime_memory_data(self._context, self._memory), ctypes.c_void_p).value or 0

    def read(self, ptr: int, length: int) -> bytes | None:
        """[ptr, ptr+length) of guest memory, or None if any part of it lies outside memory."""
        if ptr < 0 or length < 0 or length > protocol.MAX_PAYLOAD_BYTES:
            return None
        if ptr + length > self.size():
            return None
        if length == 0:
            return b""
        return ctypes.string_at(self._base() + ptr, length)

    def read_text(self, ptr: int, length: int) -> str | None:
        data = self.read(ptr, length)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def write(self, ret_ptr: int, data: bytes) -> bool:
        """Write `data` at ret_ptr if it ends inside memory (an empty result still needs ret_ptr <= memory size)."""
        if ret_ptr < 0 or ret_ptr + len(data) > self.size():
            return False
        if data:
            ctypes.memmove(self._base() + ret_ptr, data, len(data))
        return True


def read_bytes(store: wasmtime.Caller | wasmtime.Store, memory: wasmtime.Memory, ptr: int, length: int) -> bytes | None:
    """[ptr, ptr+length) of guest memory, or None if any part of it lies outside memory."""
    if ptr < 0 or length < 0 or length > protocol.MAX_PAYLOAD_BYTES:
        return None
    if ptr + length > memory.data_len(store):
        return None
    if length == 0:
        return b""
    return bytes(memory.read(store, ptr, ptr + length))


def _forwarder(forward: _Forward, bridge: HostBridge) -> _RawHandler:
    n64 = forward.i64_args
    strings = forward.strings
    ret_index = n64 + 2 * strings  # only if has_ret
    build = forward.build
    has_ret = forward.has_ret
    write_failure = forward.write_failure

    def host_function(caller: object, values: ctypes.Array) -> None:
        code = READ_FAILURE
        try:
            memory = _CallerMemory.of(caller)
            if memory is not None:
                code = _forward_call(memory, values)
        finally:
            values[0].i32 = code

    def _forward_call(memory: _CallerMemory, values: ctypes.Array) -> int:
        try:
            leading = [values[i].i64 for i in range(n64)]
            texts = []
            for i in range(n64, n64 + 2 * strings, 2):
                text = memory.read_text(values[i].i32, values[i + 1].i32)
                if text is None:
                    return READ_FAILURE
                texts.append(text)
            reply = bridge.request(lambda host_call_id: build(host_call_id, *leading, *texts))
            if reply is None:
                return READ_FAILURE
            if reply.code < 0:
                return reply.code
            if not has_ret:
                return 0
            if not memory.write(values[ret_index].i32, reply.data):
                return write_failure
            return len(reply.data)
        except Exception:  # never let anything cross into wasmtime
            return READ_FAILURE

    return host_function


def _logger(level: str, bridge: HostBridge) -> _RawHandler:
    def host_function(caller: object, values: ctypes.Array) -> None:
        try:
            memory = _CallerMemory.of(caller)
            message = None if memory is None else memory.read_text(values[0].i32, values[1].i32)
            if message is not None:
                bridge.log(level, message)
        except Exception:
            pass

    return host_function
