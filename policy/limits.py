"""Resource limits of the host capabilities for one plugin. Pure values; the supervisor enforces them.

Result caps exist because the tark core ABI writes results at a guest pointer with no capacity argument
(tark-core-abi.md §1, weakness 3): a result longer than the guest's buffer would overwrite guest memory. The
smallest buffers real guests use are 128 KiB for http/fs/storage/ws results and 256 B for env values, so a
result above the cap is answered with an error instead of being written.
"""

from __future__ import annotations

import attrs

KIB = 1024
MIB = 1024 * KIB


def _positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"limit {attribute.name} must be positive, got {value!r}")


def _field(default: float, doc: str):
    return attrs.field(default=default, validator=_positive, metadata={"doc": doc})


@attrs.frozen
class Limits:
    # one export call (docs/limits.md)
    call_timeout_s: float = _field(
        120.0, "wall deadline of one export call, covering guest CPU and every host call it waits on")
    call_cpu_ms: int = _field(30_000, "guest CPU time of one export call (epoch interruption)")
    call_max_arg_bytes: int = _field(
        4 * MIB, "largest string argument (a chat message, tool arguments) accepted before any worker sees it")
    memory_limit_bytes: int = _field(
        256 * MIB, "guest linear memory cap; also the engine's memory reservation, so growth never copies")

    # storage
    storage_quota_bytes: int = _field(10 * MIB, "total bytes of all keys and values (UTF-8) a plugin may store")
    storage_max_key_bytes: int = _field(1 * KIB, "longest storage key, in UTF-8 bytes")
    storage_max_value_bytes: int = _field(
        1 * MIB, "longest storage value; reading it back is further bounded by max_result_bytes")
    storage_busy_timeout_s: float = _field(5.0, "how long a write waits for another process holding the database")

    # http
    http_connect_timeout_s: float = _field(10.0, "TCP/TLS connect timeout per hop (tark: 10 s)")
    http_total_timeout_s: float = _field(30.0, "wall time of one request including redirects and body (tark: 30 s)")
    http_max_response_body_bytes: int = _field(4 * MIB, "response body size at which reading stops with an error")
    http_max_redirects: int = _field(10, "redirects followed, each re-checked against the policy (tark: 10)")
    http_max_concurrent: int = _field(4, "requests of one plugin in flight at once; more wait, then fail")

    # results written back into guest memory
    max_result_bytes: int = _field(128 * KIB, "largest http/fs/storage/ws result (smallest real guest buffer)")
    env_max_result_bytes: int = _field(256, "largest env value returned (real guests use 256 B buffers)")

    # websockets
    ws_max_handles: int = _field(8, "open websocket connections per plugin")
    ws_connect_timeout_s: float = _field(10.0, "connect + handshake timeout")
    ws_recv_max_bytes: int = _field(65536, "cap on recv's max_bytes argument (tark caps it at 65536)")
    ws_max_frame_bytes: int = _field(1 * MIB, "largest incoming message kept by the client; larger ones close")
    ws_max_recv_timeout_s: float = _field(60.0, "cap on the guest-chosen recv timeout")
    ws_max_queued_messages: int = _field(
        2, "received messages buffered per connection; then the server is throttled (TCP backpressure)")

    # logging
    log_lines_per_second: float = _field(50.0, "sustained rate of plugin log lines")
    log_burst: int = _field(200, "lines a plugin may log at once before the rate applies")
    log_max_line_chars: int = _field(8192, "longer log messages are cut")

    # fs
    fs_max_file_bytes: int = _field(128 * KIB, "largest file tark:fs read returns")

    def describe(self) -> dict[str, tuple[float, str]]:
        """Each limit's value and meaning (for `tark plugin info`)."""
        return {f.name: (getattr(self, f.name), f.metadata["doc"]) for f in attrs.fields(Limits)}
