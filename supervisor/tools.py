"""Tools of the enabled tool plugins, and running one with every enabled hook plugin firing around it.

Each plugin is called through the supervisor, so it runs in its own worker on a fresh instance per call.
Nothing a plugin does (trap, bad JSON, a dead worker, a refused call) escapes as an exception from another
plugin's listing or from a hook: it becomes a problem or a hook failure in the returned value.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import attrs

from policy.manifest import PluginType
from policy.tools import (
    DEFAULT_RISK_LEVEL,
    EXECUTE,
    GET_RISK_LEVEL,
    GET_TOOLS,
    HookCall,
    HookEvent,
    RiskLevel,
    ToolAbiError,
    ToolDef,
    ToolList,
    ToolResult,
    after_tool,
    before_tool,
    diagnostics,
    encode_args,
    hook_status,
    parse_args,
    parse_tool_result,
    parse_tools,
    risk_level,
    tool_error,
    validate_args,
)
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.call_api import CallResult


class SupervisorCalls(Protocol):
    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = "fresh") -> CallResult: ...

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]: ...


class ToolError(Exception):
    """The tool could not be started: not a tool plugin, unknown tool, its list or risk level unavailable."""


class ToolRefused(ToolError):
    """A risky or dangerous tool the user did not confirm."""


@attrs.frozen
class ToolInfo:
    plugin: str
    tool: ToolDef
    risk: RiskLevel | None
    risk_error: str | None = None


@attrs.frozen
class PluginProblem:
    plugin: str
    message: str


@attrs.frozen
class Discovery:
    tools: tuple[ToolInfo, ...]
    problems: tuple[PluginProblem, ...]


@attrs.frozen
class HookOutcome:
    plugin: str
    event: HookEvent
    error: str | None
    worker_pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen
class ToolRun:
    plugin: str
    tool: str
    result: ToolResult
    hooks: tuple[HookOutcome, ...]
    worker_pid: int | None

    @property
    def success(self) -> bool:
        return self.result.success


Confirm = Callable[[ToolInfo], bool]


class ToolRunner:
    def __init__(self, supervisor: SupervisorCalls, registry: Registry) -> None:
        self._supervisor = supervisor
        self._registry = registry

    # ------------------------------------------------------------ discovery

    def discover(self) -> Discovery:
        """Every enabled tool plugin's tools; a plugin that fails is a problem, the others still list."""
        tools: list[ToolInfo] = []
        problems: list[PluginProblem] = []
        for plugin in self._enabled(PluginType.TOOL):
            try:
                listing = self._tool_list(plugin.name)
            except ToolError as exc:
                problems.append(PluginProblem(plugin.name, str(exc)))
                continue
            problems.extend(PluginProblem(plugin.name, p) for p in listing.problems)
            for tool in listing.tools:
                try:
                    tools.append(ToolInfo(plugin.name, tool, self._risk(plugin.name, tool.name)))
                except ToolError as exc:
                    tools.append(ToolInfo(plugin.name, tool, None, risk_error=str(exc)))
                    problems.append(PluginProblem(plugin.name, str(exc)))
        return Discovery(tools=tuple(tools), problems=tuple(problems))

    def tool(self, plugin_name: str, tool_name: str) -> ToolInfo:
        plugin = self._registry.get(plugin_name)
        if plugin.manifest.plugin.type != PluginType.TOOL:
            raise ToolError(f"plugin '{plugin_name}' is a {plugin.manifest.plugin.type} plugin, not a tool plugin")
        if not plugin.enabled:
            raise ToolError(f"Plugin '{plugin_name}' is disabled; enable it with: tark plugin enable {plugin_name}")
        listing = self._tool_list(plugin_name)
        tool = listing.get(tool_name)
        if tool is None:
            known = ", ".join(t.name for t in listing.tools) or "none"
            raise ToolError(f"plugin '{plugin_name}' has no tool '{tool_name}' (its tools: {known})")
        return ToolInfo(plugin_name, tool, self._risk(plugin_name, tool_name))

    # ------------------------------------------------------------ running

    def run(self, plugin_name: str, tool_name: str, args_text: str, *, confirm: Confirm,
            timeout_s: float | None = None) -> ToolRun:
        """Check the arguments and the risk, fire the before hooks, execute, fire the after or error hooks.

        Raises ToolArgsError / ToolError / ToolRefused before anything runs; once the tool is started every
        failure (its own or a hook's) is reported in the returned ToolRun.
        """
        args = parse_args(args_text)
        info = self.tool(plugin_name, tool_name)
        validate_args(info.tool, args)
        if info.risk is not None and info.risk.needs_confirmation and not confirm(info):
            raise ToolRefused(
                f"tool '{tool_name}' of plugin '{plugin_name}' is {info.risk.label}; "
                "re-run with --yes to allow it"
            )
        args_json = encode_args(args)
        hooks = self._hook_plugins()
        outcomes = self._fire(hooks, before_tool(tool_name, args_json))
        result, pid = self._execute(plugin_name, tool_name, args_json, timeout_s)
        after = after_tool(tool_name, result) if result.success else tool_error(
            plugin_name, tool_name, result.error or "")
        outcomes += self._fire(hooks, after)
        return ToolRun(plugin=plugin_name, tool=tool_name, result=result, hooks=outcomes, worker_pid=pid)

    def _execute(self, plugin: str, tool: str, args_json: str,
                 timeout_s: float | None) -> tuple[ToolResult, int | None]:
        try:
            call = self._supervisor.call(plugin, EXECUTE, [tool, args_json], timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - refused or unreachable: a tool failure, so hooks still hear of it
            return ToolResult(False, "", _describe(exc)), None
        if call.error is not None:
            return ToolResult(False, "", f"{call.error_kind}: {call.error}"), call.worker_pid
        if call.ret is None or call.ret < 0:
            return ToolResult(False, "", f"{EXECUTE} {diagnostics(call.ret or -1, call.output)}"), call.worker_pid
        try:
            return parse_tool_result(call.output or ""), call.worker_pid
        except ToolAbiError as exc:
            return ToolResult(False, "", str(exc)), call.worker_pid

    def _fire(self, hooks: list[str], hook: HookCall) -> tuple[HookOutcome, ...]:
        outcomes = []
        for plugin in hooks:
            pid = None
            try:
                if hook.event.export not in self._supervisor.exports(plugin):
                    continue
                call = self._supervisor.call(plugin, hook.event.export, list(hook.args))
                pid = call.worker_pid
                error = f"{call.error_kind}: {call.error}" if call.error is not None else hook_status(call.ret)
            # A hook must never change the tool's outcome, whatever went wrong with it (its module no longer
            # loads, its worker cannot start, the daemon refused the call).
            except Exception as exc:  # noqa: BLE001
                error = _describe(exc)
            outcomes.append(HookOutcome(plugin, hook.event, error, pid))
        return tuple(outcomes)

    # ------------------------------------------------------------ plugin calls

    def _tool_list(self, plugin: str) -> ToolList:
        call = self._call(plugin, GET_TOOLS, [])
        if call.ret is None or call.ret < 0:
            raise ToolError(f"{GET_TOOLS} {diagnostics(call.ret or -1, call.output)}")
        try:
            return parse_tools(call.output or "")
        except ToolAbiError as exc:
            raise ToolError(str(exc)) from None

    def _risk(self, plugin: str, tool: str) -> RiskLevel:
        if GET_RISK_LEVEL not in self._exports(plugin):
            return DEFAULT_RISK_LEVEL
        call = self._call(plugin, GET_RISK_LEVEL, [tool])
        try:
            return risk_level(call.ret if call.ret is not None else -1)
        except ToolAbiError as exc:
            raise ToolError(f"risk level of tool '{tool}' unavailable: {exc}") from None

    def _exports(self, plugin: str) -> dict[str, Any]:
        try:
            return self._supervisor.exports(plugin)
        except Exception as exc:  # noqa: BLE001 - one plugin's broken module must not break the others
            raise ToolError(_describe(exc)) from None

    def _call(self, plugin: str, export: str, args: list[str]) -> CallResult:
        try:
            call = self._supervisor.call(plugin, export, args)
        except Exception as exc:  # noqa: BLE001 - refused (missing export, bad signature) or unreachable
            raise ToolError(_describe(exc)) from None
        if call.error is not None:
            raise ToolError(f"{export} failed ({call.error_kind}): {call.error}")
        return call

    def _enabled(self, kind: PluginType) -> list[InstalledPlugin]:
        return sorted((p for p in self._registry.list().plugins if p.enabled and p.manifest.plugin.type == kind),
                      key=lambda p: p.name)

    def _hook_plugins(self) -> list[str]:
        return [p.name for p in self._enabled(PluginType.HOOK)]


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
