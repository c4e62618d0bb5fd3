"""The one message protocol between the supervisor and a worker (both sides import this module, nothing else).

Transport: one private ZeroMQ endpoint per worker (ipc:// in a 0700 directory); the supervisor knows which
worker a message came from by the socket it arrived on, never by message content.
Codec: msgpack via msgspec, one tagged struct per message. Decoding validates types, UTF-8 and the length
bounds below, so a malformed message from a (possibly compromised) worker is rejected before any handler
sees it; the supervisor then kills that worker.

Flow of one export call:
    supervisor -> worker   Invoke
    worker -> supervisor   zero or more host requests (StorageGet ... FsRead), each answered by HostReply,
                           and one-way Log / GuestOutput messages
    worker -> supervisor   InvokeResult
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec

# Bounds. ZMQ_MAXMSGSIZE is set to MAX_MESSAGE_BYTES on both sockets, so larger frames never arrive.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # one argument, body, value or result
MAX_NAME_LENGTH = 256  # export names, storage keys, env names, capability ops
MAX_URL_LENGTH = 8192
MAX_ARGS = 16

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]
Url = Annotated[str, msgspec.Meta(max_length=MAX_URL_LENGTH)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_PAYLOAD_BYTES)]
LayerName = Annotated[str, msgspec.Meta(max_length=32, pattern=r"^[a-z][a-z0-9-]*$")]
Blob = Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD_BYTES)]
CallId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
I32 = Annotated[int, msgspec.Meta(ge=-(2**31), lt=2**31)]
I64 = int  # msgpack ints are at most 64-bit already
TOKEN_BYTES = 32
Token = Annotated[bytes, msgspec.Meta(min_length=TOKEN_BYTES, max_length=TOKEN_BYTES)]


class _Msg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True, tag_field="t"):
    pass


# --------------------------------------------------------------------------- worker start-up


class EngineSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """wasmtime Config values. A serialized module only loads into an engine built with the same values,
    so the supervisor (which compiles and caches) and the worker (which deserializes) share this."""

    epoch_interruption: bool = True
    consume_fuel: bool = False
    memory_reservation: int = 256 * 1024 * 1024  # = the memory cap, so growth never copies (docs/limits.md)
    memory_guard_size: int = 64 * 1024
    memory_reservation_for_growth: int = 0
    max_wasm_stack: int = 1024 * 1024

    def cache_key(self) -> str:
        return ",".join(f"{f}={getattr(self, f)}" for f in self.__struct_fields__)


def build_engine_config(settings: EngineSettings):
    """A `wasmtime.Config` for `settings` (imported lazily: the protocol itself needs no wasmtime)."""
    import wasmtime

    config = wasmtime.Config()
    config.epoch_interruption = settings.epoch_interruption
    config.consume_fuel = settings.consume_fuel
    config.memory_reservation = settings.memory_reservation
    config.memory_guard_size = settings.memory_guard_size
    config.memory_reservation_for_growth = settings.memory_reservation_for_growth
    config.max_wasm_stack = settings.max_wasm_stack
    config.parallel_compilation = False
    return config


class WorkerSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a worker needs, handed to it at start. Holds no secrets."""

    plugin: Name
    endpoint: Annotated[str, msgspec.Meta(max_length=4096)]
    module_path: Annotated[str, msgspec.Meta(max_length=4096)]  # serialized module written by the supervisor
    # The module as a sealed memfd at MODULE_FD, verified by the supervisor (module_path is then only its name).
    module_fd: int | None = None
    component: bool = False  # the module is a component (wit/tark.wit), as the supervisor read its preamble
    engine: EngineSettings = EngineSettings()
    memory_limit_bytes: int = 256 * 1024 * 1024  # guest linear memory cap (wasmtime StoreLimits)
    call_cpu_ms: int = 30_000  # epoch deadline per export call
    epoch_tick_ms: int = 10
    fuel_per_call: int | None = None  # deterministic CPU budget when engine.consume_fuel
    log_lines_per_second: int = 200
    # RLIMIT_AS of the worker process (None = not set): the runtime plus four stores reserving the memory cap
    # and its guard (policy.limits.worker_address_space_bytes)
    os_memory_limit_bytes: int | None = 256 * 1024 * 1024 + 4 * (256 * 1024 * 1024 + 64 * 1024)
    open_files_limit: int = 64  # RLIMIT_NOFILE once the worker is set up
    # The one secret a worker holds, only until its first message: proof that it is the process the supervisor
    # started (docs/security.md, "Worker identity"). Never in argv or the environment; useless once Ready is in.
    token: Token = b"\0" * TOKEN_BYTES
    # The worker's own unprivileged uid (and gid) when the supervisor runs as root (docs/security.md, "Own uid").
    run_as_uid: Annotated[int, msgspec.Meta(ge=1, le=2**32 - 2)] | None = None


# --------------------------------------------------------------------------- supervisor <-> fork server
# (worker/forkserver.py: one datagram each way per worker start, descriptors alongside)

MODULE_FD = 3  # where a worker finds its sealed module memfd
MAX_FORK_REQUEST_BYTES = 64 * 1024


class ForkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    entry: Annotated[str, msgspec.Meta(max_length=1024)]  # "module:function", called with `spec` in the worker
    spec: Annotated[bytes, msgspec.Meta(max_length=MAX_FORK_REQUEST_BYTES // 2)]
    with_module_fd: bool = False


class ForkReply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pid: int = 0  # the worker's (or, in the first reply, the fork server's own: it is ready)
    error: str = ""


# --------------------------------------------------------------------------- supervisor -> worker


class Invoke(_Msg, tag="invoke"):
    """Call `export` with `args` copied in through `alloc`; `result_capacity` None = the export returns a bare
    status code, otherwise alloc(result_capacity) is passed last and the result read back from it.
    `instance` "fresh" = a new instance for this call (tark's default); any other name = a long-lived instance
    kept under that name (tark's channel poll loop)."""

    call_id: CallId
    export: Name
    args: Annotated[list[Blob], msgspec.Meta(max_length=MAX_ARGS)]
    result_capacity: Annotated[int, msgspec.Meta(ge=0, le=MAX_PAYLOAD_BYTES)] | None
    instance: Name = "fresh"


class EndInstance(_Msg, tag="end_instance"):
    """Drop a long-lived instance."""

    instance: Name


class HostReply(_Msg, tag="reply"):
    """Answer to one host request. `code` < 0: return it to the guest, write nothing. Otherwise write `data` at
    the guest's ret_ptr and return len(data) (the worker returns the ABI's write-failure code if it does not
    fit in guest memory)."""

    host_call_id: CallId
    code: I32
    data: Blob = b""


class Shutdown(_Msg, tag="shutdown"):
    pass


ToWorker = Union[Invoke, EndInstance, HostReply, Shutdown]


# --------------------------------------------------------------------------- worker -> supervisor


class Ready(_Msg, tag="ready"):
    """The worker's first message once it is set up. `token` is WorkerSpec.token: the supervisor accepts Ready (or
    StartFailed) only with it, then pins the connection it came on; everything else on the endpoint is a stranger."""

    token: Token
    warnings: Annotated[list[Text], msgspec.Meta(max_length=16)] = []  # lock-down steps that could not be applied
    layers: Annotated[list[LayerName], msgspec.Meta(max_length=16)] = []  # sandbox layers in force (worker/lockdown)


class StartFailed(_Msg, tag="start_failed"):
    token: Token
    message: Text


class StorageGet(_Msg, tag="storage.get"):
    host_call_id: CallId
    key: Text


class StorageSet(_Msg, tag="storage.set"):
    host_call_id: CallId
    key: Text
    value: Text


class StorageDelete(_Msg, tag="storage.delete"):
    host_call_id: CallId
    key: Text


class StorageListKeys(_Msg, tag="storage.list_keys"):
    """wit/tark.wit storage.list-keys (components only). Reply: a JSON array of the keys, sorted."""

    host_call_id: CallId


class HttpGet(_Msg, tag="http.get"):
    host_call_id: CallId
    url: Text
    headers: Text  # the guest's JSON array of [name, value] pairs, as written


class HttpPost(_Msg, tag="http.post"):
    host_call_id: CallId
    url: Text
    body: Text
    headers: Text


class WsConnect(_Msg, tag="ws.connect"):
    host_call_id: CallId
    url: Text
    headers: Text


class WsSend(_Msg, tag="ws.send"):
    host_call_id: CallId
    handle: I64
    data: Text


class WsRecv(_Msg, tag="ws.recv"):
    host_call_id: CallId
    handle: I64
    timeout_ms: I64
    max_bytes: I64


class WsClose(_Msg, tag="ws.close"):
    host_call_id: CallId
    handle: I64


class EnvGet(_Msg, tag="env.get"):
    host_call_id: CallId
    name: Text


class FsRead(_Msg, tag="fs.read"):
    host_call_id: CallId
    path: Text


class Log(_Msg, tag="log"):
    """tark:log.* (one-way, no reply)."""

    level: Literal["debug", "info", "warn", "error"]
    message: Text


class GuestOutput(_Msg, tag="output"):
    """What the guest wrote to WASI stdout/stderr (one-way, no reply)."""

    stream: Literal["stdout", "stderr"]
    data: Blob


class CallError(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Why an export call produced no result. `kind` is one of CALL_ERROR_KINDS."""

    kind: Name
    message: Text


CALL_ERROR_KINDS = (
    "trap",  # guest trapped (unreachable, out-of-bounds access, stack overflow, proc_exit)
    "cpu_limit",  # epoch deadline or fuel exhausted
    "missing_export",  # export, alloc or memory missing or of the wrong type
    "bad_result",  # returned length outside the buffer or guest memory, alloc returned an invalid pointer
    "instantiate",  # the module could not be instantiated (unknown import, start trap)
)


class InvokeResult(_Msg, tag="result"):
    """Outcome of Invoke. `ret` is the export's i32; `output` the bytes read back (None for bare status exports
    and negative returns without readable diagnostics)."""

    call_id: CallId
    ret: I32 | None = None
    output: Blob | None = None
    error: CallError | None = None


HostRequest = Union[
    StorageGet, StorageSet, StorageDelete, StorageListKeys, HttpGet, HttpPost, WsConnect, WsSend, WsRecv, WsClose, EnvGet, FsRead
]
FromWorker = Union[
    Ready, StartFailed, StorageGet, StorageSet, StorageDelete, StorageListKeys, HttpGet, HttpPost, WsConnect, WsSend, WsRecv,
    WsClose, EnvGet, FsRead, Log, GuestOutput, InvokeResult,
]


class ProtocolError(Exception):
    """A message that does not decode to a valid protocol message."""


_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_from_worker = msgspec.msgpack.Decoder(FromWorker)
_spec = msgspec.msgpack.Decoder(WorkerSpec)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_from_worker(frame: bytes) -> FromWorker:
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return _from_worker.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"invalid message from worker: {exc}") from None


def decode_to_worker(frame: bytes) -> ToWorker:
    try:
        return _to_worker.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"invalid message from supervisor: {exc}") from None


def decode_spec(blob: bytes) -> WorkerSpec:
    return _spec.decode(blob)
