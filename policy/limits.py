"""Resource limits of one plugin: its calls, its worker and its host capabilities. Pure values; the supervisor
enforces them. `resolve_limits` is the one place a plugin's limits come from (defaults <- admin policy <- the
admin policy's entry for the plugin); the worker spec, the engine settings and the capability configs are derived
from its result (docs/limits.md).

Result caps exist because the tark core ABI writes results at a guest pointer with no capacity argument
(tark-core-abi.md §1, weakness 3): a result longer than the guest's buffer would overwrite guest memory. The
smallest buffers real guests use are 128 KiB for http/fs/storage/ws results and 256 B for env values, so a
result above the cap is answered with an error instead of being written.
"""

from __future__ import annotations

from typing import Mapping

import attrs

from policy.errors import PolicyError

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


# --------------------------------------------------------------------------- one source of truth

DEFAULT = "default"
ADMIN = "admin policy"
ADMIN_PLUGIN = "admin policy, per plugin"


class LimitsError(PolicyError):
    """A limit in the admin policy that is unknown, of the wrong type or out of range."""


@attrs.frozen
class ResolvedLimits:
    """One plugin's limits and where each value came from (DEFAULT, ADMIN or ADMIN_PLUGIN)."""

    limits: Limits = Limits()
    sources: Mapping[str, str] = attrs.field(factory=lambda: {f.name: DEFAULT for f in attrs.fields(Limits)})

    def describe(self) -> dict[str, tuple[float, str, str]]:
        """name -> (value, source, meaning), for `tark plugin info`."""
        return {name: (value, self.sources[name], doc) for name, (value, doc) in self.limits.describe().items()}


def resolve_limits(defaults: Limits = Limits(), admin: Mapping[str, object] | None = None,
                   per_plugin: Mapping[str, object] | None = None) -> ResolvedLimits:
    """defaults <- the admin policy's [limits] <- its entry for this plugin; each value's source is recorded.
    Raises LimitsError naming the limit and the layer for an unknown name, a wrong type or a bad value."""
    fields = {f.name: f for f in attrs.fields(Limits)}
    values = attrs.asdict(defaults)
    sources = {name: DEFAULT for name in fields}
    for layer, mapping in ((ADMIN, admin or {}), (ADMIN_PLUGIN, per_plugin or {})):
        for name, value in mapping.items():
            field = fields.get(name)
            if field is None:
                raise LimitsError(f"unknown limit '{name}' in the {layer}; known limits: {', '.join(fields)}")
            values[name] = _typed(name, value, type(getattr(defaults, name)), layer)
            sources[name] = layer
    try:
        limits = Limits(**values)
    except ValueError as exc:
        raise LimitsError(f"{exc} (set in the {_layers_of(exc, sources)})") from None
    return ResolvedLimits(limits, sources)


def _typed(name: str, value: object, kind: type, layer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        wanted = "a whole number" if kind is int else "a number"
        raise LimitsError(f"limit '{name}' in the {layer} must be {wanted}, got {value!r}")
    return value


def _layers_of(exc: ValueError, sources: Mapping[str, str]) -> str:
    return next((sources[name] for name in sources if f" {name} " in f" {exc} "), ADMIN)


# --------------------------------------------------------------------------- sizes checked at the door


class ArgumentTooLarge(PolicyError):
    """A call argument over the plugin's call_max_arg_bytes limit (refused before any worker sees it)."""


def check_call_args(export: str, sizes: list[int], limits: Limits, hard_cap: int, total_cap: int) -> None:
    """Refuse an argument larger than the plugin's limit (never above `hard_cap`, the protocol's bound on one
    argument), or arguments together over `total_cap` (the protocol's bound on one message)."""
    cap = min(limits.call_max_arg_bytes, hard_cap)
    if sum(sizes) > total_cap:
        raise ArgumentTooLarge(f"the arguments of '{export}' total {_size(sum(sizes))}, over the {_size(total_cap)}"
                               " limit on one call's arguments (see docs/limits.md)")
    for index, size in enumerate(sizes, start=1):
        if size > cap:
            raise ArgumentTooLarge(
                f"argument {index} of '{export}' is {_size(size)}, over the {_size(cap)} limit on one call argument"
                " (limit call_max_arg_bytes; see docs/limits.md)")


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB ({n} bytes)"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB ({n} bytes)"
    return f"{n} bytes"


# --------------------------------------------------------------------------- derived values

WORKER_RUNTIME_ADDRESS_SPACE = 256 * MIB  # the worker's interpreter, wasmtime and libraries, before any store
LIVE_STORES = 4  # a fresh instance per call plus long-lived ones (a channel's poll loop, a chat session)


def worker_address_space_bytes(limits: Limits, guard_bytes: int) -> int:
    """RLIMIT_AS of a worker: each live store reserves `memory_limit_bytes` + the guard of address space up front
    (the engine's reservation equals the cap, so growth never moves memory), plus the runtime itself."""
    return WORKER_RUNTIME_ADDRESS_SPACE + LIVE_STORES * (limits.memory_limit_bytes + guard_bytes)
