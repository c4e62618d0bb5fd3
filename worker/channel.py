"""The worker's end of its private ZeroMQ endpoint: one DEALER connected to the supervisor's socket.

The worker notices a lost supervisor through a socket monitor (the ipc connection reports DISCONNECTED when the
supervisor's socket closes or its process dies); every blocking receive also wakes up once a second to look.
"""

from __future__ import annotations

import os
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from worker import protocol

# pyzmq's Cython send, without the Python wrapper of zmq.Socket.send (keyword handling for draft sockets).
_zmq_send = zmq.backend.Socket.send
_LIVENESS_CHECK_MS = 1000
_CLOSE_LINGER_MS = 200  # long enough to flush a last StartFailed/InvokeResult, short if nobody listens


class SupervisorLost(Exception):
    """The supervisor closed the endpoint or went away; the worker must exit."""


class SupervisorLink:
    def __init__(self, endpoint: str) -> None:
        self._context = zmq.Context(io_threads=1)
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVTIMEO, _LIVENESS_CHECK_MS)
        # An unguessable routing id: ZeroMQ's own are a counter another process could claim first (docs/security.md).
        self._socket.setsockopt(zmq.ROUTING_ID, b"w" + os.urandom(15))
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._connected = False
        self._socket.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._lost = False

    def __enter__(self) -> SupervisorLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.setsockopt(zmq.LINGER, _CLOSE_LINGER_MS)
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close()
        self._context.term()

    def send(self, message: protocol.ToWorker | protocol.FromWorker, *, drop_if_busy: bool = False) -> bool:
        """Queue one message. With drop_if_busy (one-way logs) a full queue drops it instead of blocking."""
        try:
            self._socket.send(protocol.encode(message), zmq.NOBLOCK if drop_if_busy else 0)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            raise SupervisorLost(f"cannot send to supervisor: {exc}") from None
        return True

    def send_frame(self, frame: bytes) -> None:
        """Send one already encoded message (the host-call hot path encodes once to check its size)."""
        try:
            _zmq_send(self._socket, frame)
        except zmq.ZMQError as exc:
            raise SupervisorLost(f"cannot send to supervisor: {exc}") from None

    def receive_idle(self) -> protocol.ToWorker | None:
        """Block until the supervisor says something (None if it was not a valid message)."""
        while True:
            events = dict(self._poller.poll())
            if self._monitor in events:
                self._check_monitor()
            if self._socket in events:
                return self._decode(self._socket.recv(zmq.NOBLOCK))

    def receive(self) -> protocol.ToWorker | None:
        """Block for the next message on the hot path (a plain recv; liveness is checked on each timeout)."""
        while True:
            try:
                frame = self._socket.recv()
            except zmq.Again:
                self._check_monitor()
                continue
            except zmq.ZMQError as exc:
                raise SupervisorLost(f"cannot receive from supervisor: {exc}") from None
            return self._decode(frame)

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the connection to the supervisor is up (False after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while not self._connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._monitor.poll(remaining * 1000):
                return self._connected
            self._check_monitor()
        return True

    def _check_monitor(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            if event["event"] == zmq.EVENT_CONNECTED:
                self._connected = True
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                raise SupervisorLost("the supervisor closed the connection")

    @staticmethod
    def _decode(frame: bytes) -> protocol.ToWorker | None:
        try:
            return protocol.decode_to_worker(frame)
        except protocol.ProtocolError:
            return None
