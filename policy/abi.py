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
