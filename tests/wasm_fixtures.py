"""Build tiny tark-ABI guests from WAT for tests.

`guest_wat(body)` wraps `body` (exports, data segments) in a module that imports all 15 `tark:*` functions
under $names like `$storage_get`, and provides `memory` (2 pages), a bump `alloc` that counts calls in
$allocs, a `dealloc` that counts calls in $deallocs and a `$counter` global. `make_guest(dir, body, ...)`
writes plugin.toml + plugin.wasm and returns the loaded InstalledPlugin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import wasmtime

from supervisor.host import PluginHost
from supervisor.plugin import InstalledPlugin, load_plugin_dir
from worker import protocol
from worker.channel import SupervisorLink, SupervisorLost

TARK_IMPORTS = """
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:storage" "delete" (func $storage_delete (param i32 i32) (result i32)))
  (import "tark:http" "get" (func $http_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "tark:http" "post" (func $http_post (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "tark:ws" "connect" (func $ws_connect (param i32 i32 i32 i32 i32) (result i32)))
  (import "tark:ws" "send" (func $ws_send (param i64 i32 i32 i32) (result i32)))
  (import "tark:ws" "recv" (func $ws_recv (param i64 i64 i64 i32) (result i32)))
  (import "tark:ws" "close" (func $ws_close (param i64 i32) (result i32)))
  (import "tark:env" "get" (func $env_get (param i32 i32 i32) (result i32)))
  (import "tark:log" "debug" (func $log_debug (param i32 i32)))
  (import "tark:log" "info" (func $log_info (param i32 i32)))
  (import "tark:log" "warn" (func $log_warn (param i32 i32)))
  (import "tark:log" "error" (func $log_error (param i32 i32)))
  (import "tark:fs" "read" (func $fs_read (param i32 i32 i32) (result i32)))
"""

RUNTIME = """
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $counter (mut i32) (i32.const 0))
  (global $allocs (mut i32) (i32.const 0))
  (global $deallocs (mut i32) (i32.const 0))
  ;; bump allocator, 8-byte aligned; never reuses memory
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (global.set $allocs (i32.add (global.get $allocs) (i32.const 1)))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $heap)
                                (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))))))
    (local.get $p))
  (func (export "dealloc") (param i32 i32)
    (global.set $deallocs (i32.add (global.get $deallocs) (i32.const 1))))
  (func (export "counters") (param $ret i32) (result i32)
    ;; writes allocs and deallocs as two little-endian i32s
    (i32.store (local.get $ret) (global.get $allocs))
    (i32.store (i32.add (local.get $ret) (i32.const 4)) (global.get $deallocs))
    (i32.const 8))
"""


WASI_PROC_EXIT = '(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))'


def guest_wat(body: str, *, imports: bool = True, runtime: bool = True, extra_imports: str = "") -> str:
    return (
        "(module\n" + (TARK_IMPORTS if imports else "") + extra_imports + (RUNTIME if runtime else "") + body + "\n)"
    )


def wasm_of(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def make_guest(
    directory: Path,
    body: str = "",
    *,
    name: str = "probe",
    type: str = "provider",
    capabilities: str = "",
    wat: str | None = None,
    wasm: bytes | None = None,
    extra_imports: str = "",
) -> InstalledPlugin:
    """A plugin directory whose wasm is `guest_wat(body)` (or the given full `wat`, or raw `wasm` bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = f'[plugin]\nname = "{name}"\nversion = "0.1.0"\ntype = "{type}"\n'
    if capabilities:
        manifest += "[capabilities]\n" + capabilities + "\n"
    (directory / "plugin.toml").write_text(manifest)
    (directory / "plugin.wasm").write_bytes(wasm if wasm is not None else wasm_of(wat or guest_wat(body, extra_imports=extra_imports)))
    return load_plugin_dir(directory)


def i32_pair(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[:4], "little", signed=True), int.from_bytes(data[4:8], "little", signed=True)


# --------------------------------------------------------------------------- misbehaving workers
# Stand-ins for a compromised worker process (pass as WorkerPool(worker_entry=...)): each starts like the real
# worker (real socket, Ready) and answers the first Invoke with something the supervisor must reject.


def _misbehave(spec_bytes: bytes, reply: Callable[[protocol.Invoke], bytes]) -> None:
    spec = protocol.decode_spec(spec_bytes)
    with SupervisorLink(spec.endpoint) as link:
        link.send(protocol.Ready(token=spec.token))
        try:
            while True:
                message = link.receive_idle()
                if isinstance(message, protocol.Invoke):
                    link._socket.send(reply(message))
                elif isinstance(message, protocol.Shutdown):
                    return
        except SupervisorLost:
            return


def garbage_worker(spec_bytes: bytes) -> None:
    _misbehave(spec_bytes, lambda invoke: b"\xc1 this is not msgpack")


def wrong_call_worker(spec_bytes: bytes) -> None:
    _misbehave(spec_bytes, lambda invoke: protocol.encode(protocol.InvokeResult(call_id=invoke.call_id + 1, ret=0)))


def oversized_output_worker(spec_bytes: bytes) -> None:
    def reply(invoke: protocol.Invoke) -> bytes:
        size = (invoke.result_capacity or 0) + 10
        return protocol.encode(protocol.InvokeResult(call_id=invoke.call_id, ret=size, output=b"x" * size))

    _misbehave(spec_bytes, reply)


def slow_start_worker(spec_bytes: bytes) -> None:
    """The real worker, starting 0.5 s late: the window in which an attacker connects to its endpoint first."""
    import time

    from worker.main import run

    time.sleep(0.5)
    run(spec_bytes)


FLOOD_MESSAGES = 200
FLOOD_FRAME = b"\x00" * (protocol.MAX_MESSAGE_BYTES - 1024)  # a complete message just under ZMQ_MAXMSGSIZE


def flooding_worker(spec_bytes: bytes) -> None:
    """Answers its first call properly, then sends FLOOD_MESSAGES messages of ~8 MiB outside any call."""
    spec = protocol.decode_spec(spec_bytes)
    with SupervisorLink(spec.endpoint) as link:
        link.send(protocol.Ready(token=spec.token))
        try:
            while not isinstance(invoke := link.receive_idle(), protocol.Invoke):
                pass
            link.send(protocol.InvokeResult(call_id=invoke.call_id, ret=7))
            for _ in range(FLOOD_MESSAGES):
                link._socket.send(FLOOD_FRAME, copy=False)  # one buffer, so the flood costs this process nothing
            while True:  # stay connected until the supervisor ends this worker
                link.receive_idle()
        except SupervisorLost:
            return


def chatty_worker(spec_bytes: bytes) -> None:
    """Answers each call, then sends one more (valid) message after the result: a message outside a call."""
    spec = protocol.decode_spec(spec_bytes)
    with SupervisorLink(spec.endpoint) as link:
        link.send(protocol.Ready(token=spec.token))
        try:
            while True:
                message = link.receive_idle()
                if isinstance(message, protocol.Invoke):
                    link.send(protocol.InvokeResult(call_id=message.call_id, ret=7))
                    link.send(protocol.Log(level="info", message="one more thing"))
                elif isinstance(message, protocol.Shutdown):
                    return
        except SupervisorLost:
            return


def control_client_worker(spec_bytes: bytes) -> None:
    """A compromised worker going for the daemon's control socket (next to its own endpoint), itself and through a
    child it forks: asks to call another plugin and to shut the daemon down, with the token file's content (readable
    here: this test worker is not landlocked). Writes what it got back to control-attempt.json there."""
    import json
    import time
    from pathlib import Path

    from supervisor.control import DaemonClient, Request  # a compromised worker can run any code it likes

    spec = protocol.decode_spec(spec_bytes)
    runtime_dir = Path(spec.endpoint.removeprefix("ipc://")).parent

    def attempt() -> list[str]:
        results = []
        for request in (Request(op="call", plugin="other", export="secret", args=[]), Request(op="shutdown")):
            try:
                with DaemonClient(runtime_dir) as client:
                    reply = client.request(request)
                results.append("accepted" if reply.ok else f"error: {reply.error}")
            except Exception as exc:  # noqa: BLE001 - report whatever happened
                results.append(f"refused: {exc}")
        return results

    with SupervisorLink(spec.endpoint) as link:
        report = {"worker": attempt()}
        child = os.fork()
        if child == 0:
            (runtime_dir / "control-child.json").write_text(json.dumps(attempt()))
            os._exit(0)
        os.waitpid(child, 0)
        report["child"] = json.loads((runtime_dir / "control-child.json").read_text())
        (runtime_dir / "control-attempt.json").write_text(json.dumps(report))
        link.send(protocol.Ready(token=spec.token))
        try:
            while not isinstance(message := link.receive_idle(), protocol.Invoke):
                pass
            link.send(protocol.InvokeResult(call_id=message.call_id, ret=7))
            while True:
                time.sleep(1)
        except SupervisorLost:
            return


class RecordingHost(PluginHost):
    """The real PluginHost, also remembering what it was asked to log."""

    def __init__(self, plugin: InstalledPlugin, **kwargs: object) -> None:
        super().__init__(plugin, **kwargs)
        self.logged: list[protocol.Log | protocol.GuestOutput] = []

    def on_log(self, message: protocol.Log | protocol.GuestOutput) -> None:
        self.logged.append(message)
        super().on_log(message)

