"""The supervisor<->worker protocol: every message round-trips, and anything else is rejected as ProtocolError
(never another exception, never a half-decoded message)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import protocol

SAMPLES = [
    protocol.Ready(token=b"t" * protocol.TOKEN_BYTES),
    protocol.StorageGet(host_call_id=1, key="k"),
    protocol.StorageSet(host_call_id=2, key="k", value="v" * 1000),
    protocol.HttpPost(host_call_id=3, url="https://a/", body="{}", headers='[["a","b"]]'),
    protocol.WsRecv(host_call_id=4, handle=2**62, timeout_ms=-5, max_bytes=70000),
    protocol.Log(level="warn", message="ünïcode"),
    protocol.GuestOutput(stream="stderr", data=b"\xff\x00"),
    protocol.InvokeResult(call_id=9, ret=-3, output=b'{"error":"x"}'),
    protocol.InvokeResult(call_id=9, error=protocol.CallError(kind="trap", message="unreachable")),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_worker_messages_round_trip(message):
    assert protocol.decode_from_worker(protocol.encode(message)) == message


def test_supervisor_messages_round_trip():
    invoke = protocol.Invoke(call_id=1, export="provider_chat", args=[b"[]", b"m"], result_capacity=65536)
    assert protocol.decode_to_worker(protocol.encode(invoke)) == invoke


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode(["storage.get", 1]),  # missing field
        msgspec.msgpack.encode(["storage.get", -1, "k"]),  # negative call id
        msgspec.msgpack.encode(["storage.get", 1, "k", "extra"]),  # unknown field
        msgspec.msgpack.encode(["log", "shout", "x"]),  # level outside the enum
        msgspec.msgpack.encode(["result", 1, 2**40, None, None]),  # ret beyond i32
        msgspec.msgpack.encode(["invoke", 1, "x", [], None]),  # a supervisor message sent by a worker
        msgspec.msgpack.encode(["storage.get", 1, "k" * (protocol.MAX_PAYLOAD_BYTES + 1)]),  # over the bound
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8 string
    ],
)
def test_malformed_frames_from_a_worker_are_protocol_errors(frame):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_from_worker(frame)


def test_oversized_frame_is_refused_before_decoding():
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.decode_from_worker(b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1))


@settings(max_examples=500)
@given(st.binary(max_size=256))
def test_random_bytes_never_escape_as_another_exception(frame):
    try:
        protocol.decode_from_worker(frame)
    except protocol.ProtocolError:
        pass


@settings(max_examples=300)
@given(st.lists(st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.text(max_size=20), st.binary(max_size=20), st.none(), st.booleans()),
                max_size=6))
def test_random_msgpack_arrays_never_escape_as_another_exception(items):
    try:
        protocol.decode_from_worker(msgspec.msgpack.encode(items))
    except protocol.ProtocolError:
        pass
