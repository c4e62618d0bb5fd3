"""The 15 `tark:*` host imports of the tark core ABI (tark-core-abi.md §1), as forwarding stubs.

Each import reads its string arguments from the guest's `memory` export with full bounds checks (negative or
overflowing ptr/len -> -1 instead of tark's host panic, weakness 4), rejects invalid UTF-8 with -1, forwards one
host request to the supervisor through a `HostBridge`, and writes the reply at `ret_ptr` only if it fits in guest
memory. Imports never raise: an exception crossing wasmtime travels through a module global (see the notes).
"""

from __future__ import annotations

import ctypes
import itertools
import struct
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
# The callback and the few C functions a host call uses take plain addresses (c_void_p): ctypes then hands the
# handler ints instead of pointer objects, and no `ctypes.cast` or wasmtime-py wrapper runs per call (together
# about half of the worker's Python time per host call; docs/performance.md).
_RawHandler = Callable[[int, int], None]  # (caller address, address of the raw values array)
_HANDLERS: dict[int, _RawHandler] = {}
_next_handler = itertools.count(1)
_VAL_RAW_BYTES = ctypes.sizeof(ffi.wasmtime_val_raw_t)


@ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
def _raw_trampoline(env, caller, values, count):  # type: ignore[no-untyped-def]
    try:
        _HANDLERS[env](caller, values)
    except BaseException:  # a handler never raises; nothing may cross into wasmtime in any case
        pass
    return 0  # no trap


# The same function pointer with the type wasmtime-py declares for the define call (the ABI is the same).
_RAW_TRAMPOLINE = ctypes.cast(_raw_trampoline, ffi.wasmtime_func_unchecked_callback_t)


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
        _RAW_TRAMPOLINE,
        key,
        _raw_finalize,
    )
    if error:
        _HANDLERS.pop(key, None)
        raise wasmtime.WasmtimeError._from_ptr(error)


def _c_function(name: str, restype: object, *argtypes: object) -> Callable[..., object]:
    """A C function of libwasmtime with our own argument types (`dll[name]` is a new object each time, so
    wasmtime-py's own, cached as attributes, keep theirs)."""
    function = ffi.dll[name]
    function.restype = restype
    function.argtypes = argtypes
    return function


_caller_export_get = _c_function("wasmtime_caller_export_get", ctypes.c_bool, ctypes.c_void_p, ctypes.c_char_p,
                                 ctypes.c_size_t, ctypes.c_void_p)
_caller_context = _c_function("wasmtime_caller_context", ctypes.c_void_p, ctypes.c_void_p)
_memory_data = _c_function("wasmtime_memory_data", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_memory_data_size = _c_function("wasmtime_memory_data_size", ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_MEMORY_OFFSET = ffi.wasmtime_extern_t.of.offset  # wasmtime_extern_t.of.memory
_string_at = ctypes.string_at
_memmove = ctypes.memmove
_c_int32 = ctypes.c_int32


class _CallerMemory:
    """Finds the calling instance's `memory` export from inside one host call: its base address and size, read
    once (the guest cannot run, so cannot grow or move its memory, until the call returns). One per import; the
    extern it fills is scratch space for the lookup."""

    __slots__ = ("_item", "_item_address", "_memory_address")

    def __init__(self) -> None:
        self._item = ffi.wasmtime_extern_t()
        self._item_address = ctypes.addressof(self._item)
        self._memory_address = self._item_address + _MEMORY_OFFSET

    def of(self, caller: int) -> tuple[int, int] | None:
        """(base address, size in bytes), or None if the caller has no memory export."""
        if not _caller_export_get(caller, b"memory", 6, self._item_address) or self._item.kind != _EXTERN_MEMORY:
            return None
        context = _caller_context(caller)
        return _memory_data(context, self._memory_address) or 0, _memory_data_size(context, self._memory_address)


def _read(base: int, size: int, ptr: int, length: int) -> bytes | None:
    """[ptr, ptr+length) of guest memory, or None if any part of it lies outside memory."""
    if ptr < 0 or length < 0 or length > protocol.MAX_PAYLOAD_BYTES or ptr + length > size:
        return None
    return _string_at(base + ptr, length) if length else b""


def _read_text(base: int, size: int, ptr: int, length: int) -> str | None:
    data = _read(base, size, ptr, length)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _write(base: int, size: int, ret_ptr: int, data: bytes) -> bool:
    """Write `data` at ret_ptr if it ends inside memory (an empty result still needs ret_ptr <= memory size)."""
    if ret_ptr < 0 or ret_ptr + len(data) > size:
        return False
    if data:
        _memmove(base + ret_ptr, data, len(data))
    return True


def _values_format(forward: _Forward) -> struct.Struct:
    """The raw values array of a forwarding import as one struct (each value is a 16-byte union)."""
    pad = f"{_VAL_RAW_BYTES - 8}x", f"{_VAL_RAW_BYTES - 4}x"
    kinds = ["q"] * forward.i64_args + ["i"] * (2 * forward.strings + (1 if forward.has_ret else 0))
    return struct.Struct("<" + "".join(kind + (pad[0] if kind == "q" else pad[1]) for kind in kinds[:-1]) + kinds[-1])


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
    text_end = n64 + 2 * forward.strings
    build = forward.build
    has_ret = forward.has_ret
    write_failure = forward.write_failure
    values_format = _values_format(forward)
    unpack, values_bytes = values_format.unpack, values_format.size
    memory_of = _CallerMemory().of
    request = bridge.request

    def host_function(caller: int, values: int) -> None:
        code = READ_FAILURE
        try:
            memory = memory_of(caller)
            if memory is not None:
                code = _forward_call(memory, unpack(_string_at(values, values_bytes)))
        finally:
            _c_int32.from_address(values).value = code

    def _forward_call(memory: tuple[int, int], raw: tuple[int, ...]) -> int:
        base, size = memory
        try:
            call_args = list(raw[:n64])
            for i in range(n64, text_end, 2):
                text = _read_text(base, size, raw[i], raw[i + 1])
                if text is None:
                    return READ_FAILURE
                call_args.append(text)
            reply = request(lambda host_call_id: build(host_call_id, *call_args))
            if reply is None:
                return READ_FAILURE
            if reply.code < 0:
                return reply.code
            if not has_ret:
                return 0
            if not _write(base, size, raw[text_end], reply.data):
                return write_failure
            return len(reply.data)
        except Exception:  # never let anything cross into wasmtime
            return READ_FAILURE

    return host_function


def _logger(level: str, bridge: HostBridge) -> _RawHandler:
    memory_of = _CallerMemory().of
    unpack = struct.Struct(f"<i{_VAL_RAW_BYTES - 4}xi").unpack

    def host_function(caller: int, values: int) -> None:
        try:
            memory = memory_of(caller)
            if memory is not None:
                ptr, length = unpack(_string_at(values, _VAL_RAW_BYTES + 4))
                message = _read_text(*memory, ptr, length)
                if message is not None:
                    bridge.log(level, message)
        except Exception:
            pass

    return host_function
