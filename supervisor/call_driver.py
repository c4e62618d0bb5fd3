"""The supervisor's side of one export call on a started worker.

A call is driven by the calling thread, one call at a time per worker: send Invoke, then poll the worker's socket
and its process sentinel together, answer each host request through the plugin's HostHandler, and finish on
InvokeResult. Each call has one wall deadline covering the worker's start, guest CPU and every host call it waits
on (docs/limits.md): quick host calls are answered inline, host calls that wait on the network are started with
`HostHandler.begin` and their future is polled next to the worker, so the deadline, the caller's cancel fd (a
dropped control connection) or the pool closing cancels the host work at once and the worker is replaced. The
worker is untrusted: a message that fails decoding, a result for another call or a result that breaks the rules
the supervisor set (buffer capacity) ends the call with a `Fail` that kills the worker.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import attrs
import zmq

from supervisor.worker_process import (
    CANCELLED,
    INVALID_MESSAGE,
    TIMEOUT,
    WORKER_DIED,
    Fail,
    SecurityEvents,
    Worker,
    death_message,
    describe,
    recv_message,
    stranger,
)
from worker import protocol


@attrs.frozen
class Call:
    """One export call's deadline and cancel fd, and the messages that name them."""

    plugin: str
    export: str
    timeout_s: float
    started: float
    cancel_fd: int | None

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def timeout_message(self, pending: Pending | None, *, starting: bool = False) -> str:
        where = ""
        if pending is not None:
            where = f" (it was waiting for its {pending.what} host call, which was cancelled)"
        elif starting:
            where = " (its worker was still starting)"
        return (f"plugin '{self.plugin}' did not finish '{self.export}' within {self.timeout_s:g} s, the call's"
                f" deadline{where}; its worker was stopped")

    def cancelled_message(self, why: str) -> str:
        return f"call to '{self.export}' of plugin '{self.plugin}' was cancelled: {why}"

    def busy_message(self) -> str:
        return (f"plugin '{self.plugin}' did not start '{self.export}' within {self.timeout_s:g} s, the call's"
                " deadline: its previous call was still running")


@attrs.define
class Pending:
    """A host call that waits (http, ws) running on the plugin host's event loop."""

    future: concurrent.futures.Future
    request: protocol.HostRequest

    @property
    def what(self) -> str:
        return f"tark:{type(self.request).__struct_config__.tag}"

    def reply(self) -> protocol.HostReply:
        try:
            reply = self.future.result(0)
        except BaseException:  # noqa: BLE001 - the host work failed or was cancelled: the guest gets -1
            return protocol.HostReply(host_call_id=self.request.host_call_id, code=-1)
        if reply.host_call_id != self.request.host_call_id:
            reply = protocol.HostReply(host_call_id=self.request.host_call_id, code=reply.code, data=reply.data)
        return reply


class Wake:
    """An eventfd a host call's done callback signals (from the event loop thread); safe against a late signal
    after the worker is gone (the fd number could be reused)."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._lock = threading.Lock()
        self._closed = False

    def signal(self) -> None:
        with self._lock:
            if not self._closed:
                os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


class CallDriver:
    """Drives calls on workers; `interrupt_fd` becomes readable when the pool closes (every call ends at once)."""

    def __init__(self, interrupt_fd: int, security_events: SecurityEvents) -> None:
        self._interrupt_fd = interrupt_fd
        self._security_events = security_events

    def drive(self, worker: Worker, invoke: protocol.Invoke, call: Call) -> protocol.InvokeResult:
        poller = self._poller(worker)
        if call.cancel_fd is not None:
            poller.register(call.cancel_fd, zmq.POLLIN)
        pending: Pending | None = None
        set_call = getattr(worker.host, "set_call", None)
        if set_call is not None:
            set_call(call.deadline)
        try:
            self._send(worker, invoke, invoke)
            while True:
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    raise Fail(TIMEOUT, call.timeout_message(pending), kill=True, crash=False)
                events = dict(poller.poll(remaining * 1000))
                if not events:
                    continue
                if worker.socket in events:
                    message = self._receive(worker)
                    if message is None:
                        continue
                    if isinstance(message, protocol.InvokeResult):
                        if pending is not None:
                            invalid(worker, f"a result while its {pending.what} host call was pending")
                        check_result(worker, invoke, message)
                        return message
                    if pending is not None and not isinstance(message, (protocol.Log, protocol.GuestOutput)):
                        invalid(worker, f"a host request while its {pending.what} host call was pending")
                    pending = self._serve(worker, invoke, message)
                if worker.wake.fd in events:
                    worker.wake.drain()
                    if pending is not None and pending.future.done():
                        done, pending = pending, None
                        reply = done.reply()
                        _count(worker, done.request, reply.code)
                        self._send(worker, invoke, reply)
                if worker.process.sentinel in events:
                    raise Fail(WORKER_DIED, death_message(worker, f"during '{invoke.export}'"), kill=True)
                if self._interrupt_fd in events:
                    raise Fail(CANCELLED, call.cancelled_message("the supervisor is stopping"), kill=True,
                               crash=False)
                if call.cancel_fd is not None and call.cancel_fd in events:
                    raise Fail(CANCELLED, call.cancelled_message("its caller went away"), kill=True, crash=False)
        finally:
            if set_call is not None:
                set_call(None)
            if pending is not None:
                pending.future.cancel()  # cancels the host work itself (the request, the recv)
            if call.cancel_fd is not None:
                poller.unregister(call.cancel_fd)

    def expect_quiet(self, worker: Worker) -> None:
        """Between calls the worker has nothing to say: a message from it found queued ends it (it would otherwise
        pile up in the supervisor's memory, or be taken as part of the next call); strangers' are dropped."""
        while worker.socket.get(zmq.EVENTS) & zmq.POLLIN:
            peer, frame = recv_message(worker.socket)
            if peer != worker.peer:
                stranger(self._security_events, worker, peer, frame, "between calls")
                continue
            self._security_events(worker.plugin.name, "worker_message_outside_call",
                                  {"pid": worker.pid, "message": describe(frame)})
            invalid(worker, f"{describe(frame)} outside a call")

    def _poller(self, worker: Worker) -> zmq.Poller:
        poller = worker.poller
        if poller is None:
            worker.wake = Wake()
            poller = worker.poller = zmq.Poller()
            poller.register(worker.socket, zmq.POLLIN)
            poller.register(worker.process.sentinel, zmq.POLLIN)
            poller.register(worker.wake.fd, zmq.POLLIN)
            poller.register(self._interrupt_fd, zmq.POLLIN)
        return poller

    def _receive(self, worker: Worker) -> protocol.FromWorker | None:
        peer, frame = recv_message(worker.socket)
        if peer != worker.peer:
            stranger(self._security_events, worker, peer, frame, "during a call")
            return None
        if frame is None:
            invalid(worker, "a message of more than one frame")
        try:
            return protocol.decode_from_worker(frame)
        except protocol.ProtocolError as exc:
            raise Fail(INVALID_MESSAGE, f"worker for plugin '{worker.plugin.name}' sent an invalid message: {exc}",
                       kill=True) from None

    def _serve(self, worker: Worker, invoke: protocol.Invoke, message: protocol.FromWorker) -> Pending | None:
        """Answer a quick host request now, or start a waiting one and return it (answered when it is done)."""
        if isinstance(message, (protocol.Log, protocol.GuestOutput)):
            try:
                worker.host.on_log(message)
            except Exception:
                pass
            _count(worker, message, 0)
            return None
        if isinstance(message, (protocol.Ready, protocol.StartFailed)):
            invalid(worker, f"unexpected {type(message).__name__} during '{invoke.export}'")
        begin = getattr(worker.host, "begin", None)
        future = begin(message) if begin is not None else None
        if future is not None:
            wake = worker.wake
            future.add_done_callback(lambda _f: wake.signal())
            return Pending(future, message)
        try:
            reply = worker.host.handle(message)
        except Exception:  # HostHandler.handle must not raise; if it does, the guest sees a failure code
            reply = protocol.HostReply(host_call_id=message.host_call_id, code=-1)
        if reply.host_call_id != message.host_call_id:
            reply = protocol.HostReply(host_call_id=message.host_call_id, code=reply.code, data=reply.data)
        _count(worker, message, reply.code)
        self._send(worker, invoke, reply)
        return None

    @staticmethod
    def _send(worker: Worker, invoke: protocol.Invoke, message: protocol.ToWorker) -> None:
        try:
            worker.send(message)
        except zmq.ZMQError:  # ROUTER_MANDATORY: the worker's connection is gone
            raise Fail(WORKER_DIED, death_message(worker, f"during '{invoke.export}'"), kill=True) from None


def check_result(worker: Worker, invoke: protocol.Invoke, result: protocol.InvokeResult) -> None:
    if result.call_id != invoke.call_id:
        invalid(worker, f"result for call {result.call_id} while call {invoke.call_id} was running")
    if result.error is not None:
        if result.error.kind not in protocol.CALL_ERROR_KINDS:
            invalid(worker, f"unknown error kind {result.error.kind!r}")
        return
    if result.ret is None:
        invalid(worker, "result without a return value or an error")
    if result.output is not None:
        capacity = invoke.result_capacity
        if capacity is None:
            invalid(worker, f"output for '{invoke.export}', which returns a bare status")
        if len(result.output) > capacity:
            invalid(worker, f"output of {len(result.output)} bytes exceeds the {capacity}-byte buffer")
        if result.ret >= 0 and len(result.output) != result.ret:
            invalid(worker, f"output of {len(result.output)} bytes for a return value of {result.ret}")
    elif invoke.result_capacity is not None and result.ret >= 0:
        invalid(worker, f"no output for a return value of {result.ret}")


def invalid(worker: Worker, what: str) -> None:
    raise Fail(INVALID_MESSAGE, f"worker for plugin '{worker.plugin.name}' sent an invalid message: {what}", kill=True)


def _count(worker: Worker, message: protocol.FromWorker, code: int) -> None:
    if worker.stats is not None:
        tag = type(message).__struct_config__.tag
        worker.stats.host_call("log" if tag == "output" else tag.partition(".")[0], code)
