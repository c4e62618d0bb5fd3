"""Facts of the tark core ABI v0.1 that decide how an export is called (tark-core-abi.md §2, §3). Pure data.

tark passes a result buffer of a fixed capacity to the exports it knows; `tark plugin call` uses the same capacity
for those, and for any other export derives the shape from its signature.
"""

from __future__ import annotations

import attrs

DEFAULT_RESULT_CAPACITY = 65536

# export name -> result capacity (bytes) tark allocates for it
RESULT_CAPACITY: dict[str, int] = {
    "display_name": 256,
    "get_endpoint": 1024,
    "get_token": 4096,
    "provider_info": 8192,
    "provider_models": 8192,
    "provider_auth_credentials": 8192,
    "channel_info": 8192,
    "channel_widget_state": 8192,
    "channel_poll": 8192,
    "auth_process_tokens": 8192,
    "provider_chat": 65536,
    "channel_handle_webhook": 65536,
    "channel_handle_gateway_event": 65536,
    "channel_send": 65536,
    # our tool ABI, in tark's style (docs/tool-hook-abi.md)
    "tool_get_tools": 8192,
    "tool_execute": 65536,
}

# exports that take only inputs (or nothing) and return a bare status code
STATUS_ONLY = frozenset(
    {
        "provider_auth_init",
        "channel_auth_init",
        "init_with_credentials",
        "provider_auth_status",
        "provider_auth_logout",
        "channel_start",
        "channel_stop",
        "channel_auth_status",
        "channel_auth_logout",
        "logout",
        "status",
        "tool_get_risk_level",
        "hook_on_tool_execute",
        "hook_on_tool_complete",
        "hook_on_error",
    }
)

# How many string arguments each core export the host knows takes (tark-core-abi.md §3, docs/tool-hook-abi.md,
# docs/components.md). With STATUS_ONLY this gives every export's core signature: the one table all callers use.
STRING_ARGS: dict[str, int] = {
    "display_name": 0, "get_endpoint": 0, "get_token": 0, "status": 0, "logout": 0, "init_with_credentials": 1,
    "provider_info": 0, "provider_models": 0, "provider_chat": 2, "provider_auth_credentials": 0,
    "provider_auth_init": 1, "provider_auth_status": 0, "provider_auth_logout": 0, "auth_process_tokens": 1,
    "channel_info": 0, "channel_start": 0, "channel_stop": 0, "channel_poll": 0, "channel_widget_state": 0,
    "channel_handle_webhook": 1, "channel_handle_gateway_event": 1, "channel_send": 1, "channel_auth_init": 1,
    "channel_auth_status": 0, "channel_auth_logout": 0,
    "tool_get_tools": 0, "tool_get_risk_level": 1, "tool_execute": 2,
    "hook_on_tool_execute": 2, "hook_on_tool_complete": 2, "hook_on_error": 1,
    "auth_start_device_flow": 0, "auth_poll": 1,  # components only (auth-plugin's device flow)
}

Signature = tuple[tuple[str, ...], tuple[str, ...]]


def core_signature(export: str) -> Signature:
    """(params, results) of a known core export: an i32 pair per string argument, a result pointer unless the
    export returns a bare status, and one i32 result."""
    params = ("i32",) * (2 * STRING_ARGS[export] + (export not in STATUS_ONLY))
    return params, ("i32",)


CORE_SIGNATURES: dict[str, Signature] = {export: core_signature(export) for export in STRING_ARGS}


class ExportShapeError(Exception):
    """An export whose signature does not fit the string-argument calling convention."""


@attrs.frozen
class ExportShape:
    """How to call an export: how many string arguments, and the result capacity (None = bare status)."""

    string_args: int
    result_capacity: int | None


def export_shape(name: str, params: tuple[str, ...], results: tuple[str, ...]) -> ExportShape:
    """Derive the call shape from an export's core signature (value type names such as "i32").

    Every string argument is a (ptr, len) pair of i32; a result buffer adds one trailing i32 pointer.
    The ABI's capacity table wins for the exports tark knows.
    """
    if results != ("i32",) or any(p != "i32" for p in params):
        raise ExportShapeError(
            f"export '{name}' has signature ({', '.join(params)}) -> ({', '.join(results)}); "
            "tark exports take i32 arguments and return one i32"
        )
    if name in STATUS_ONLY or (name not in RESULT_CAPACITY and len(params) % 2 == 0):
        if len(params) % 2:
            raise ExportShapeError(f"export '{name}' takes {len(params)} parameters; expected (ptr, len) pairs")
        return ExportShape(string_args=len(params) // 2, result_capacity=None)
    if len(params) % 2 != 1:
        raise ExportShapeError(
            f"export '{name}' takes {len(params)} parameters; expected (ptr, len) pairs and a result pointer"
        )
    return ExportShape(string_args=len(params) // 2, result_capacity=RESULT_CAPACITY.get(name, DEFAULT_RESULT_CAPACITY))


# --------------------------------------------------------------------------- the two ABIs (docs/components.md)

WIT_PACKAGE = "tark:plugin@0.1.0"
CORE_MODULE = "module"
COMPONENT = "component"
_PREAMBLE_MAGIC = b"\0asm"


def wasm_kind(data: bytes) -> str | None:
    """"module" (core wasm) or "component", read from the preamble's layer field; None if not wasm at all."""
    if len(data) < 8 or data[:4] != _PREAMBLE_MAGIC:
        return None
    return COMPONENT if data[6:8] == b"\x01\x00" else CORE_MODULE


@attrs.frozen
class Export:
    """One export in both ABIs: the core export `core` and the component function `interface`#`function` of
    wit/tark.wit. `args` names how each core string argument becomes a WIT argument ("string" as is, "messages":
    the core ABI's messages JSON as a list of `message` records); `result` names how the worker turns the WIT
    result into the core ABI's return code and result bytes (worker/component_values.py)."""

    core: str
    interface: str
    function: str
    args: tuple[str, ...]
    result: str

    @property
    def wit_name(self) -> str:
        return f"{self.interface}#{self.function}"

    @property
    def result_capacity(self) -> int | None:
        return None if self.core in STATUS_ONLY else RESULT_CAPACITY.get(self.core, DEFAULT_RESULT_CAPACITY)

    @property
    def core_signature(self) -> Signature:
        return CORE_SIGNATURES[self.core]


_S = ("string",)
EXPORTS: tuple[Export, ...] = (
    Export("provider_info", "provider-plugin", "name", (), "provider_info"),
    Export("provider_models", "provider-plugin", "models", (), "provider_models"),
    Export("provider_chat", "provider-plugin", "chat", ("messages", "string"), "chat_response"),
    Export("display_name", "auth-plugin", "display-name", (), "text"),
    Export("status", "auth-plugin", "status", (), "auth_status"),
    Export("auth_start_device_flow", "auth-plugin", "start-device-flow", (), "device_code"),
    Export("auth_poll", "auth-plugin", "poll", _S, "poll_result"),
    Export("get_token", "auth-plugin", "get-token", (), "text_or_error"),
    Export("logout", "auth-plugin", "logout", (), "status_or_error"),
    Export("tool_get_tools", "tool-plugin", "get-tools", (), "tool_defs"),
    Export("tool_get_risk_level", "tool-plugin", "get-risk-level", _S, "risk_level"),
    Export("tool_execute", "tool-plugin", "execute", _S * 2, "tool_result"),
    Export("hook_on_tool_execute", "hook-plugin", "on-tool-execute", _S * 2, "nothing"),
    Export("hook_on_tool_complete", "hook-plugin", "on-tool-complete", _S * 2, "nothing"),
    Export("hook_on_error", "hook-plugin", "on-error", _S, "nothing"),
    Export("channel_info", "channel-plugin", "info", (), "channel_info"),
    Export("channel_start", "channel-plugin", "start", (), "status_or_error"),
    Export("channel_stop", "channel-plugin", "stop", (), "status_or_error"),
    Export("channel_poll", "channel-plugin", "poll", (), "inbound_messages"),
    Export("channel_handle_webhook", "channel-plugin", "handle-webhook", _S, "text_or_error"),
    Export("channel_send", "channel-plugin", "send", _S, "text_or_error"),
)
EXPORTS_BY_CORE: dict[str, Export] = {e.core: e for e in EXPORTS}
assert all(STRING_ARGS[e.core] == len(e.args) for e in EXPORTS), "the table disagrees with STRING_ARGS"
EXPORTS_BY_WIT: dict[str, Export] = {e.wit_name: e for e in EXPORTS}
# tark's status codes of the core ABI for the WIT enums (tark-core-abi.md §3.2 legacy auth numbering; tool §2.2)
AUTH_STATUS_CODES = {"not-authenticated": 0, "authenticated": 1, "expired": 2}
RISK_LEVEL_CODES = {"read-only": 0, "write": 1, "risky": 2, "dangerous": 3}


def interface_name(interface: str) -> str:
    """The full name a component exports an interface under: `tark:plugin/tool-plugin@0.1.0`."""
    package, version = WIT_PACKAGE.split("@")
    return f"{package}/{interface}@{version}"


def resolve_export(name: str) -> Export | None:
    """The table entry for a core name (`tool_execute`), a WIT name (`tool-plugin#execute`) or a full WIT name
    (`tark:plugin/tool-plugin@0.1.0#execute`)."""
    if name in EXPORTS_BY_CORE:
        return EXPORTS_BY_CORE[name]
    interface, sep, function = name.partition("#")
    if not sep:
        return None
    prefix, version = WIT_PACKAGE.split("@")
    if interface.startswith(prefix + "/") and interface.endswith("@" + version):
        interface = interface[len(prefix) + 1 : -len(version) - 1]
    return EXPORTS_BY_WIT.get(f"{interface}#{function}")


def component_core_exports(functions: dict[str, set[str]]) -> dict[str, Signature]:
    """The core exports a component stands for: `functions` maps each exported interface (full name) to its
    function names; each table entry it has becomes its core export with the core signature."""
    found = {}
    for entry in EXPORTS:
        if entry.function in functions.get(interface_name(entry.interface), ()):
            found[entry.core] = entry.core_signature
    return found
