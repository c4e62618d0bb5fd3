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

from policy.abi import ExportShapeError, export_shape
from policy.limits import ArgumentTooLarge, Limits, ResolvedLimits, check_call_args
from supervisor import paths, plugin_limits
from supervisor.consent.live import Consent, PinMismatch
from supervisor.credentials import CredentialsError, credentials_path
from supervisor.host import PluginHost
from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.capabilities.audit import default_audit_path
from supervisor.security_events import SecurityAudit
from supervisor.workers import CallOutcome, WorkerLimits, WorkerPool
from worker.protocol import MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, EngineSettings

log = logging.getLogger(__name__)

MAX_ARGS_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # what an Invoke's arguments may total (room for its other fields)


class CallRefused(Exception):
    """A call the supervisor will not start (unknown/disabled plugin, missing export, wrong argument count)."""


@attrs.frozen
class CallResult:
    """What `tark plugin call` reports: the export's return code and output (None for bare status exports)."""

    plugin: str
    export: str
    ret: int | None
    output: str | None
    error: str | None
    error_kind: str | None
    worker_pid: int | None

    @property
    def ok(self) -> bool:
        return self.error is None


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
        )

    def limits_for(self, name: str) -> ResolvedLimits:
        """The plugin's limits and where each came from; its worker, engine and capabilities derive from them."""
        return self._resolve(name)

    def _host(self, plugin: InstalledPlugin) -> PluginHost:
        return PluginHost(plugin, self.limits_for(plugin.name).limits, grants=self.consent.grants(plugin),
                          own_credentials=lambda: _own_credentials(plugin))
