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
import typing
from typing import Any, Callable

import attrs
import zmq

from supervisor.worker_process import (
    CANCELLED,
    HostHandler,
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

_setaffinity = os.sched_setaffinity
_monotonic = time.monotonic
_zmq_poll = zmq.zmq_poll
_SNDMORE = zmq.SNDMORE


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


def _wake(worker: Worker) -> Wake:
    """Made at the worker's first waiting host call (HTTP, websocket): a worker that never makes one, like most
    idle plugins, costs the supervisor one descriptor less (docs/limits.md, "Many plugins")."""
    if worker.wake is None:
        worker.wake = Wake()
        assert worker.poller is not None
        worker.poller.register(worker.wake.fd, zmq.POLLIN)  # the list drive() polls: seen from the next poll
    return worker.wake


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


_STAT_NAMES: dict[type, str] = {
    cls: "log" if cls.__struct_config__.tag == "output" else cls.__struct_config__.tag.partition(".")[0]
    for cls in (*typing.get_args(protocol.HostRequest), protocol.Log, protocol.GuestOutput)
}
_ONE_WAY = (protocol.Log, protocol.GuestOutput)
# pyzmq's Cython send, without the Python wrapper of zmq.Socket.send (keyword handling for draft sockets).
_zmq_send = zmq.backend.Socket.send
_COPY_BELOW = zmq.COPY_THRESHOLD  # smaller frames are copied anyway; larger ones are sent without a copy


class CallDriver:
    """Drives calls on workers; `interrupt_fd` becomes readable when the pool closes (every call ends at once).

    The loop is the per-host-call hot path (docs/performance.md): one zmq_poll over a list built once per worker,
    the message frame received as a zmq.Frame (its `more` flag instead of a RCVMORE getsockopt) and decoded from
    its buffer, the host's methods looked up once per call, and replies sent through pyzmq's Cython send."""

    def __init__(self, interrupt_fd: int, security_events: SecurityEvents, cpus: frozenset[int]) -> None:
        self._interrupt_fd = interrupt_fd
        self._security_events = security_events
        self._cpus = cpus  # what the calling thread gets back after a call on a worker's home CPU

    def drive(self, worker: Worker, invoke: protocol.Invoke, call: Call) -> protocol.InvokeResult:
        if worker.cpu is None:
            return self._drive(worker, invoke, call)
        _setaffinity(0, (worker.cpu,))  # this thread joins the worker on its home CPU (supervisor/placement.py)
        try:
            return self._drive(worker, invoke, call)
        finally:
            _setaffinity(0, self._cpus)

    def _drive(self, worker: Worker, invoke: protocol.Invoke, call: Call) -> protocol.InvokeResult:
        poller = self._poller(worker)
        cancel_fd = call.cancel_fd
        if cancel_fd is not None:
            poller.register(cancel_fd, zmq.POLLIN)
        pending: Pending | None = None
        host = worker.host
        set_call = getattr(host, "set_call", None)
        deadline = call.deadline
        if set_call is not None:
            set_call(deadline)
        begin = getattr(host, "begin", None)
        socket, items = worker.socket, poller.sockets
        send = self._sender(worker, invoke)
        try:
            send(invoke)
            while True:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise Fail(TIMEOUT, call.timeout_message(pending), kill=True, crash=False)
                # +1: never a 0 ms poll that spins through the last fraction of a millisecond
                events = _zmq_poll(items, int(remaining * 1000) + 1)
                if not events:
                    continue
                if events[0][0] is socket:  # zmq_poll reports in registration order: the socket is first
                    message = self._receive(worker)
                    if message is not None:
                        kind = type(message)
                        if kind is protocol.InvokeResult:
                            if pending is not None:
                                invalid(worker, f"a result while its {pending.what} host call was pending")
                            check_result(worker, invoke, message)
                            return message
                        if kind in _ONE_WAY:
                            self._log(worker, message)
                        elif pending is not None:
                            invalid(worker, f"a host request while its {pending.what} host call was pending")
                        elif kind is protocol.Ready or kind is protocol.StartFailed:
                            invalid(worker, f"unexpected {kind.__name__} during '{invoke.export}'")
                        else:
                            pending = self._serve(worker, host, begin, message, send)
                    if len(events) == 1:
                        continue
                ready = {item for item, _ in events}
                wake = worker.wake
                if wake is not None and wake.fd in ready:
                    wake.drain()
                    if pending is not None and pending.future.done():
                        done, pending = pending, None
                        reply = done.reply()
                        _count(worker, done.request, reply.code)
                        send(reply)
                if worker.process.sentinel in ready:
                    raise Fail(WORKER_DIED, death_message(worker, f"during '{invoke.export}'"), kill=True)
                if self._interrupt_fd in ready:
                    raise Fail(CANCELLED, call.cancelled_message("the supervisor is stopping"), kill=True,
                               crash=False)
                if cancel_fd is not None and cancel_fd in ready:
                    raise Fail(CANCELLED, call.cancelled_message("its caller went away"), kill=True, crash=False)
        finally:
            if set_call is not None:
                set_call(None)
            if pending is not None:
                pending.future.cancel()  # cancels the host work itself (the request, the recv)
            if cancel_fd is not None:
                poller.unregister(cancel_fd)

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
            poller = worker.poller = zmq.Poller()
            poller.register(worker.socket, zmq.POLLIN)  # first: drive() relies on it
            poller.register(worker.process.sentinel, zmq.POLLIN)
            poller.register(self._interrupt_fd, zmq.POLLIN)
        return poller

    def _receive(self, worker: Worker) -> protocol.FromWorker | None:
        """The next message on the worker's socket, decoded; None if it came from a stranger (then ignored)."""
        socket = worker.socket
        peer = socket.recv()  # a ROUTER's first frame: the sender's routing id
        frame: zmq.Frame | None = socket.recv(copy=False)
        if frame.more:  # several frames: all dropped
            while socket.recv(copy=False).more:
                pass
            frame = None
        if peer != worker.peer:
            stranger(self._security_events, worker, peer, None if frame is None else frame.bytes, "during a call")
            return None
        if frame is None:
            invalid(worker, "a message of more than one frame")
        try:
            return protocol.decode_from_worker(frame)
        except protocol.ProtocolError as exc:
            raise Fail(INVALID_MESSAGE, f"worker for plugin '{worker.plugin.name}' sent an invalid message: {exc}",
                       kill=True) from None

    @staticmethod
    def _log(worker: Worker, message: protocol.Log | protocol.GuestOutput) -> None:
        try:
            worker.host.on_log(message)
        except Exception:
            pass
        _count(worker, message, 0)

    @staticmethod
    def _serve(worker: Worker, host: HostHandler, begin: Callable[[protocol.HostRequest], Any] | None,
               message: protocol.HostRequest, send: Callable[[protocol.ToWorker], None]) -> Pending | None:
        """Answer a quick host request now, or start a waiting one and return it (answered when it is done)."""
        future = begin(message) if begin is not None else None
        if future is not None:
            wake = _wake(worker)
            future.add_done_callback(lambda _f: wake.signal())
            return Pending(future, message)
        try:
            reply = host.handle(message)
        except Exception:  # HostHandler.handle must not raise; if it does, the guest sees a failure code
            reply = protocol.HostReply(host_call_id=message.host_call_id, code=-1)
        if reply.host_call_id != message.host_call_id:
            reply = protocol.HostReply(host_call_id=message.host_call_id, code=reply.code, data=reply.data)
        _count(worker, message, reply.code)
        send(reply)
        return None

    @staticmethod
    def _sender(worker: Worker, invoke: protocol.Invoke) -> Callable[[protocol.ToWorker], None]:
        """Sends to the worker's pinned connection; a connection that is gone (ROUTER_MANDATORY) fails the call."""
        socket, peer, encode = worker.socket, worker.peer, protocol.encode
        assert peer is not None

        def send(message: protocol.ToWorker) -> None:
            data = encode(message)
            try:
                _zmq_send(socket, peer, _SNDMORE)
                _zmq_send(socket, data, 0, len(data) < _COPY_BELOW)
            except zmq.ZMQError:
                raise Fail(WORKER_DIED, death_message(worker, f"during '{invoke.export}'"), kill=True) from None

        return send


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
        worker.stats.host_call(_STAT_NAMES[type(message)], code)
