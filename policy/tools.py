"""The tool and hook ABI's data rules (docs/tool-hook-abi.md): what a tool plugin's answers must look like, how
user arguments are checked against a tool's parameters schema, and the payloads hook plugins receive. Pure.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, Mapping

import attrs
import jsonschema
import referencing
import referencing.exceptions
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.validators import validator_for

from policy import tark_json

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

GET_TOOLS = "tool_get_tools"
GET_RISK_LEVEL = "tool_get_risk_level"
EXECUTE = "tool_execute"


class ToolAbiError(Exception):
    """A tool plugin answered something the ABI does not allow (bad JSON, wrong shape, unknown risk level)."""


class ToolArgsError(Exception):
    """The user's `--args` are not JSON or do not match the tool's parameters schema."""


class RiskLevel(enum.IntEnum):
    """`tool_get_risk_level`'s return value; the order of the `.wit` enum `risk-level`."""

    READ_ONLY = 0
    WRITE = 1
    RISKY = 2
    DANGEROUS = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def needs_confirmation(self) -> bool:
        return self >= RiskLevel.RISKY


# A tool plugin that does not export tool_get_risk_level has not said its tools are safe: ask before running them.
DEFAULT_RISK_LEVEL = RiskLevel.RISKY


def risk_level(ret: int) -> RiskLevel:
    if ret < 0:
        raise ToolAbiError(f"{GET_RISK_LEVEL} returned error code: {ret}")
    try:
        return RiskLevel(ret)
    except ValueError:
        raise ToolAbiError(f"{GET_RISK_LEVEL} returned {ret}; risk levels are 0 (read-only) to 3 (dangerous)") from None


@attrs.frozen
class ToolDef:
    name: str
    description: str
    parameters_schema: Mapping[str, Any]

    def schema_summary(self) -> str:
        """`text*: string, count: integer` (* = required), or the schema's type when it names no properties."""
        properties = self.parameters_schema.get("properties")
        if isinstance(properties, Mapping) and not properties:
            return "none"
        if not isinstance(properties, Mapping):
            kind = self.parameters_schema.get("type")
            return str(kind) if kind else "any"
        required = self.parameters_schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        parts = []
        for key, spec in properties.items():
            kind = spec.get("type", "any") if isinstance(spec, Mapping) else "any"
            kind = "|".join(map(str, kind)) if isinstance(kind, list) else str(kind)
            parts.append(f"{key}{'*' if key in required else ''}: {kind}")
        return ", ".join(parts)


@attrs.frozen
class ToolList:
    """The valid tools of one plugin, and one message per entry that was left out."""

    tools: tuple[ToolDef, ...]
    problems: tuple[str, ...]

    def get(self, name: str) -> ToolDef | None:
        return next((tool for tool in self.tools if tool.name == name), None)


def parse_tools(text: str) -> ToolList:
    """`tool_get_tools`'s output: `[{"name","description","parameters_schema"}]`. A bad entry (or every entry of
    a duplicated name) is left out with a problem message; output that is no JSON array raises ToolAbiError."""
    document = _json(text, f"{GET_TOOLS} output")
    if not isinstance(document, list):
        raise ToolAbiError(f"{GET_TOOLS} returned {_kind(document)}; expected a JSON array of tools")
    candidates: list[ToolDef] = []
    problems: list[str] = []
    for index, entry in enumerate(document):
        try:
            candidates.append(_tool_def(entry))
        except ToolAbiError as exc:
            problems.append(f"tool #{index + 1}: {exc}")
    counts: dict[str, int] = {}
    for tool in candidates:
        counts[tool.name] = counts.get(tool.name, 0) + 1
    for name, count in counts.items():
        if count > 1:
            problems.append(f"tool name '{name}' appears {count} times; all of them are left out")
    return ToolList(tools=tuple(t for t in candidates if counts[t.name] == 1), problems=tuple(problems))


def _tool_def(entry: Any) -> ToolDef:
    if not isinstance(entry, dict):
        raise ToolAbiError(f"is {_kind(entry)}, not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise ToolAbiError(f"name {json.dumps(name)[:80]} is not 1-64 letters, digits, '_' or '-'")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ToolAbiError(f"'{name}': description is {_kind(description)}, not a string")
    if "parameters_schema" not in entry:
        raise ToolAbiError(f"'{name}': parameters_schema is missing")
    schema = entry["parameters_schema"]
    if isinstance(schema, str):  # wit-bindgen guests carry the schema as a JSON string (tool-def.parameters-schema)
        schema = _json(schema, f"'{name}': parameters_schema string")
    if not isinstance(schema, dict):
        raise ToolAbiError(f"'{name}': parameters_schema is {_kind(schema)}; expected a JSON Schema object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ToolAbiError(
            f"'{name}': parameters_schema is not a valid JSON Schema: {_where(exc)}{exc.message}") from None
    except RecursionError:
        raise ToolAbiError(f"'{name}': parameters_schema is nested too deeply") from None
    return ToolDef(name=name, description=description, parameters_schema=schema)


def parse_args(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolArgsError(f"--args is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError):
        raise ToolArgsError("--args is not valid JSON") from None


def validate_args(tool: ToolDef, args: Any) -> None:
    """Check `args` against the tool's schema. `$ref`s resolve only inside the schema: nothing is fetched."""
    schema = tool.parameters_schema
    validator = validator_for(schema)(schema, registry=referencing.Registry())
    try:
        error = best_match(validator.iter_errors(args))
    except referencing.exceptions.Unresolvable as exc:
        raise ToolArgsError(
            f"the parameters schema of tool '{tool.name}' has a $ref that cannot be resolved: {exc}") from None
    except RecursionError:
        raise ToolArgsError(f"--args are nested too deeply to check against tool '{tool.name}'s schema") from None
    if error is not None:
        raise ToolArgsError(f"--args do not match the parameters of tool '{tool.name}': {_where(error)}{error.message}")


def encode_args(args: Any) -> str:
    """The arguments string passed to tool_execute and to hooks: compact JSON, as the guide's guests parse it."""
    return tark_json.dumps(args)


@attrs.frozen
class ToolResult:
    success: bool
    output: str
    error: str | None

    def to_json(self) -> str:
        return tark_json.dumps({"success": self.success, "output": self.output, "error": self.error})


def parse_tool_result(text: str) -> ToolResult:
    """`tool_execute`'s output: `{"success":bool,"output":"..","error":null|".."}`."""
    document = _json(text, f"{EXECUTE} output")
    if not isinstance(document, dict):
        raise ToolAbiError(f"{EXECUTE} returned {_kind(document)}; expected a JSON object")
    success = document.get("success")
    if not isinstance(success, bool):
        raise ToolAbiError(f"{EXECUTE} result: 'success' is {_kind(success)}; expected true or false")
    output = document.get("output", "")
    if not isinstance(output, str):
        raise ToolAbiError(f"{EXECUTE} result: 'output' is {_kind(output)}; expected a string")
    error = document.get("error")
    if error is not None and not isinstance(error, str):
        raise ToolAbiError(f"{EXECUTE} result: 'error' is {_kind(error)}; expected a string or null")
    if not success and not error:
        error = "the tool reported failure without a message"
    return ToolResult(success=success, output=output, error=error)


def diagnostics(ret: int, output: str | None) -> str:
    """The cause of a negative return: the guest's `{"error": "..."}` if it left one, else the code."""
    if output:
        try:
            document = json.loads(output)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            return f"{document['error']} (code {ret})"
    return f"returned error code: {ret}"


# ---------------------------------------------------------------- hooks


class HookEvent(enum.Enum):
    """The three hook exports, named as the guide's hook world names its functions."""

    TOOL_EXECUTE = "on_tool_execute"
    TOOL_COMPLETE = "on_tool_complete"
    ERROR = "on_error"

    @property
    def export(self) -> str:
        return f"hook_{self.value}"


@attrs.frozen
class HookCall:
    event: HookEvent
    args: tuple[str, ...]


def before_tool(tool: str, args_json: str) -> HookCall:
    return HookCall(HookEvent.TOOL_EXECUTE, (tool, args_json))


def after_tool(tool: str, result: ToolResult) -> HookCall:
    return HookCall(HookEvent.TOOL_COMPLETE, (tool, result.to_json()))


def tool_error(plugin: str, tool: str, error: str) -> HookCall:
    payload = tark_json.dumps({"plugin": plugin, "tool": tool, "error": error})
    return HookCall(HookEvent.ERROR, (payload,))


def hook_status(ret: int | None) -> str | None:
    """None if a hook's return code means success, else the failure message."""
    if ret is None or ret >= 0:
        return None
    return f"returned error code: {ret}"


# ---------------------------------------------------------------- helpers


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolAbiError(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError):
        raise ToolAbiError(f"{what} is not valid JSON") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _where(error: jsonschema.ValidationError | SchemaError) -> str:
    return "" if not error.absolute_path else f"at {error.json_path}: "
