"""The supervisor: registry + one worker per plugin + the capability host that answers each worker.

The CLI uses it embedded (the default) or through the daemon's control socket (supervisor/control.py); both
expose the same `call`/`status` operations so commands print the same either way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import attrs

from policy.abi import ExportShapeError, export_shape, resolve_export
from policy.admin_policy import AdminPolicyError
from policy.limits import ArgumentTooLarge, Limits, ResolvedLimits, check_call_args
from supervisor import paths, plugin_limits
from supervisor.admission import Admission
from supervisor.hardening import make_non_dumpable
from supervisor.consent.live import Consent, PinMismatch
from supervisor.credentials import CredentialsError, credentials_path
from supervisor.host import PluginHost
from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.call_api import CallRefused, CallResult  # noqa: F401 - re-exported: the embedded transport's types
from supervisor.capabilities.audit import default_audit_path
from supervisor.security_events import SecurityAudit
from supervisor.workers import CallOutcome, WorkerLimits, WorkerPool
from worker.protocol import MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, EngineSettings

log = logging.getLogger(__name__)

MAX_ARGS_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # what an Invoke's arguments may total (room for its other fields)


class Supervisor:
    """Owns the worker pool; every call resolves the plugin from the registry afresh, so an update or removal
    made by another CLI process is seen by the next call (a changed plugin gets a new worker)."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        runtime_dir: Path | None = None,
        cache_dir: Path | None = None,
        limits: Limits | None = None,
        idle_timeout_s: float = 300.0,
        worker_limits: WorkerLimits | None = None,
        resolve_limits: Callable[[str], ResolvedLimits] | None = None,
        consent: Consent | None = None,
    ) -> None:
        """`resolve_limits(name)` gives a plugin's limits (default: plugin_limits.limits_for, over the admin
        policy); `limits` instead gives every plugin the same. `worker_limits` overrides the worker's part (tests)."""
        make_non_dumpable()
        self.registry = registry or Registry(paths.plugins_dir())
        self.consent = consent or Consent()
        if resolve_limits is None:
            resolve_limits = ((lambda name: plugin_limits.limits_for(name, self.consent.policies)) if limits is None
                              else (lambda _name: ResolvedLimits(limits)))
        self._resolve = resolve_limits
        self.security_events = SecurityAudit(default_audit_path())
        self.modules = ModuleCache((cache_dir or paths.cache_dir()), EngineSettings(), self.security_events)
        self.pool = WorkerPool(
            runtime_dir or paths.runtime_dir(),
            self.modules,
            self._host,
            idle_timeout_s=idle_timeout_s,
            limits=lambda plugin: worker_limits or WorkerLimits.derive(self.limits_for(plugin.name).limits),
            security_events=self.security_events,
            pinned_wasm=self.consent.approved_wasm_sha256,
            required_layers=self._required_layers,
            admission=Admission(self.consent.policy).refusal,
        )

    def _required_layers(self, _plugin: InstalledPlugin) -> tuple[str, ...]:
        """The admin policy's [lockdown] require. A broken policy already denies every capability (fail closed);
        it adds no layer requirement, so the call still runs and reports the denials."""
        try:
            return self.consent.policy().required_layers
        except AdminPolicyError:
            return ()

    def limits_for(self, name: str) -> ResolvedLimits:
        """The plugin's limits and where each came from; its worker, engine and capabilities derive from them."""
        return self._resolve(name)

    def _host(self, plugin: InstalledPlugin) -> PluginHost:
        return PluginHost(plugin, self.limits_for(plugin.name).limits, grants=self.consent.grants(plugin),
                          own_credentials=lambda: _own_credentials(plugin))

    def _plugin(self, name: str) -> InstalledPlugin:
        # Read afresh on every call: the pool restarts the worker of a plugin that changed on disk.
        plugin = self.registry.get(name)
        if not plugin.enabled:
            raise CallRefused(f"Plugin '{name}' is disabled; enable it with: tark plugin enable {name}")
        try:
            self.consent.verify_pins(plugin)  # never run files other than the approved ones
        except PinMismatch as exc:
            raise CallRefused(str(exc)) from None
        return plugin

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]:
        """The plugin's exported functions and their core signatures, read from the module itself."""
        plugin = self._plugin(name)
        return {export: (list(params), list(results))
                for export, (params, results) in self.modules.exports(plugin.wasm_path, name).items()}

    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = "fresh", cancel_fd: int | None = None) -> CallResult:
        """Call `export` with string arguments. `instance` "fresh" = a new instance for this call (tark's rule);
        another name = a long-lived instance kept until `end_instance` (a channel's poll loop)."""
        plugin = self._plugin(name)
        exports = self.modules.exports(plugin.wasm_path, name)
        if export not in exports and (entry := resolve_export(export)) is not None:
            export = entry.core  # a WIT name (`tool-plugin#execute`): either ABI (docs/components.md)
        if export not in exports:
            raise CallRefused(f"Plugin does not export '{export}' function")
        params, results = exports[export]
        try:
            shape = export_shape(export, tuple(params), tuple(results))
        except ExportShapeError as exc:
            raise CallRefused(str(exc)) from None
        if len(args) != shape.string_args:
            raise CallRefused(
                f"export '{export}' takes {shape.string_args} string argument(s), {len(args)} given"
            )
        limits = self.limits_for(name).limits
        encoded = [a.encode() for a in args]
        try:  # at the door: a worker never sees an argument over the limit (docs/limits.md)
            check_call_args(export, [len(a) for a in encoded], limits, MAX_PAYLOAD_BYTES, MAX_ARGS_BYTES)
        except ArgumentTooLarge as exc:
            raise CallRefused(str(exc)) from None
        outcome: CallOutcome = self.pool.call(
            plugin, export, encoded, shape.result_capacity, timeout_s=timeout_s or limits.call_timeout_s,
            instance=instance, cancel_fd=cancel_fd,
        )
        return _result(name, export, outcome)

    def end_instance(self, name: str, instance: str) -> None:
        self.pool.end_instance(name, instance)

    def stop_worker(self, name: str) -> None:
        """Stop the plugin's worker now (it was disabled or removed); a later call would start a new one."""
        self.pool.stop(name)

    def reset(self, name: str) -> None:
        """Forget a plugin's crash record, so a plugin parked after repeated crashes may start again."""
        self.pool.reset(name)

    def status(self) -> list[dict]:
        return [attrs.asdict(s, recurse=False) for s in self.pool.status()]  # fields are plain values

    def close(self) -> None:
        self.pool.close()
        self.modules.close()
        self.security_events.close()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _own_credentials(plugin: InstalledPlugin) -> str | None:
    try:
        return os.path.realpath(credentials_path(plugin))
    except (CredentialsError, OSError):
        return None


def _result(name: str, export: str, outcome: CallOutcome) -> CallResult:
    output = None
    error = outcome.error_message
    if outcome.output is not None:
        try:
            output = outcome.output.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = error or f"Invalid UTF-8 in result (byte {exc.start})"
    return CallResult(
        plugin=name,
        export=export,
        ret=outcome.ret,
        output=output,
        error=error,
        error_kind=outcome.error_kind if outcome.error_message else ("bad_result" if error else None),
        worker_pid=outcome.worker_pid,
    )
