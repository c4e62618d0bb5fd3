"""PluginHost: the supervisor's implementation of the tark core ABI host imports for ONE plugin.

The worker forwards each host call as a protocol message; `handle` checks it against the plugin's capabilities,
executes it and answers with a HostReply (a negative ABI code, or the bytes to write at the guest's ret_ptr).
Nothing a plugin sends makes `handle` raise: unexpected internal errors are logged and answered with -1.

Each capability lives in supervisor/capabilities/<name>.py with the same three parts (Spin's factors): a
config derived from manifest + limits, its per-plugin state, its host implementation.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from pathlib import Path
from typing import Awaitable, Callable, Mapping

from policy.grants import EffectiveGrants, declared_only
from policy.limits import Limits
from supervisor import paths
from supervisor.capabilities.audit import AUDIT_FILE, AuditLog
from supervisor.capabilities.env import EnvCapability, EnvConfig
from supervisor.capabilities.fs import FsCapability, FsConfig
from supervisor.capabilities.http import HttpCapability, HttpConfig
from supervisor.capabilities.log import LogCapability, LogConfig, RateLimitedLogger
from supervisor.capabilities.outcome import FAILED, Outcome
from supervisor.capabilities.storage import StorageCapability, StorageConfig
from supervisor.capabilities.ws import WsCapability, WsConfig
from supervisor.hostio import IoLoop
from supervisor.plugin import InstalledPlugin
from supervisor.secrets import SecretReader
from worker import protocol

_log = logging.getLogger("tark.supervisor.host")


class PluginHost:
    def __init__(
        self,
        plugin: InstalledPlugin,
        limits: Limits = Limits(),
        environ: Mapping[str, str] | None = None,
        home: str | None = None,
        audit_path: Path | None = None,
        secrets_dir: Path | None = None,
        grants: Callable[[], EffectiveGrants] | None = None,
        own_credentials: Callable[[], str | None] = lambda: None,
    ) -> None:
        """`grants` gives the plugin's current effective grants (the supervisor passes Consent.grants(plugin),
        which follows approvals and the admin policy). Without it every declared item counts as granted: only
        tests and benchmarks construct a host that way."""
        self.plugin = plugin
        self.limits = limits
        if grants is None:
            fixed = declared_only(plugin.name, plugin.manifest.capabilities,
                                  home=home if home is not None else os.path.expanduser("~"))
            grants = lambda: fixed  # noqa: E731
        self.grants = grants
        plugin_logger = logging.getLogger(f"tark.plugin.{plugin.name}")
        plugin_log = RateLimitedLogger(plugin_logger)  # the handlers' own messages; a hostile loop cannot flood
        self.audit = AuditLog(audit_path or paths.data_root() / AUDIT_FILE, plugin.name)
        self.storage = StorageCapability(StorageConfig.derive(grants, plugin.data_dir, limits), self.audit, plugin_log)
        self.http = HttpCapability(HttpConfig.derive(grants, limits), self.audit, plugin_log)
        self.ws = WsCapability(WsConfig.derive(grants, limits), self.audit, plugin_log)
        self.env = EnvCapability(EnvConfig.derive(grants, limits), os.environ if environ is None else environ,
                                 self.audit, plugin_log, SecretReader(plugin.name, secrets_dir))
        self.fs = FsCapability(FsConfig.derive(grants, home if home is not None else os.path.expanduser("~"), limits,
                                               own_credentials),
                               self.audit, plugin_log)
        self.log = LogCapability(LogConfig.derive(plugin.name, limits), plugin_logger)
        self._plugin_log = plugin_log
        self._closed = threading.Event()
        self.call_deadline: float | None = None  # the running call's (monotonic), set by the pool: see set_call
        self._io = IoLoop(f"host-io-{plugin.name}")
        # Quick host calls, answered inline on the calling thread (the host-call round trip stays short).
        self._handlers: dict[type, Callable[..., Outcome]] = {
            protocol.StorageGet: lambda r: self.storage.get(r.key),
            protocol.StorageSet: lambda r: self.storage.set(r.key, r.value, self.call_deadline),
            protocol.StorageDelete: lambda r: self.storage.delete(r.key, self.call_deadline),
            protocol.StorageListKeys: lambda r: self.storage.list_keys(),
            protocol.EnvGet: lambda r: self.env.get(r.name),
            protocol.FsRead: lambda r: self.fs.read(r.path),
        }
        # Host calls that wait on the network: coroutines on self._io, cancellable by the call's owner.
        self._waiting_handlers: dict[type, Callable[..., Awaitable[Outcome]]] = {
            protocol.HttpGet: lambda r: self.http.get(r.url, r.headers),
            protocol.HttpPost: lambda r: self.http.post(r.url, r.body, r.headers),
            protocol.WsConnect: lambda r: self.ws.connect(r.url, r.headers),
            protocol.WsSend: lambda r: self.ws.send(r.handle, r.data),
            protocol.WsRecv: lambda r: self.ws.recv(r.handle, r.timeout_ms, r.max_bytes),
            protocol.WsClose: lambda r: self.ws.close(r.handle),
        }

    @property
    def name(self) -> str:
        return self.plugin.name

    def set_call(self, deadline: float | None) -> None:
        """The deadline of the call now running (None between calls): a storage write waiting for another
        writer gives up there (network host calls are cancelled by the pool instead)."""
        self.call_deadline = deadline

    def begin(self, request: protocol.HostRequest) -> concurrent.futures.Future[protocol.HostReply] | None:
        """Start a host call that waits on the network and return its future (cancel it to abort the work), or
        None for a quick one, which `handle` answers inline."""
        handler = self._waiting_handlers.get(type(request))
        if handler is None or self._closed.is_set():
            return None
        return self._io.submit(self._answer_waiting(request, handler))

    async def _answer_waiting(self, request: protocol.HostRequest,
                              handler: Callable[..., Awaitable[Outcome]]) -> protocol.HostReply:
        try:
            outcome = await handler(request)
        except Exception:  # noqa: BLE001 - as in handle: the guest gets -1
            _log.exception("plugin %s: internal error handling %s", self.name, type(request).__name__)
            outcome = Outcome(FAILED)
        return protocol.HostReply(host_call_id=request.host_call_id, code=outcome.code, data=outcome.data)

    def handle(self, request: protocol.HostRequest) -> protocol.HostReply:
        call_id = getattr(request, "host_call_id", 0)
        if self._closed.is_set():
            _log.warning("plugin %s: host call %s after close", self.name, type(request).__name__)
            return protocol.HostReply(host_call_id=call_id, code=FAILED)
        waiting = self.begin(request)
        if waiting is not None:
            return waiting.result()
        handler = self._handlers.get(type(request))
        if handler is None:
            _log.error("plugin %s: %s is not a host request", self.name, type(request).__name__)
            return protocol.HostReply(host_call_id=call_id, code=FAILED)
        try:
            outcome = handler(request)
        except Exception:  # noqa: BLE001 - a host bug must not take the supervisor down; the guest gets -1
            _log.exception("plugin %s: internal error handling %s", self.name, type(request).__name__)
            outcome = Outcome(FAILED)
        return protocol.HostReply(host_call_id=call_id, code=outcome.code, data=outcome.data)

    def on_log(self, message: protocol.Log | protocol.GuestOutput) -> None:
        try:
            if isinstance(message, protocol.Log):
                self.log.log(message.level, message.message)
            elif isinstance(message, protocol.GuestOutput):
                self.log.output(message.stream, message.data)
        except Exception:  # noqa: BLE001 - logging must never fail a plugin call
            _log.exception("plugin %s: cannot log a message", self.name)

    def close(self) -> None:
        """Close the database, http client and websockets. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._io.close(self.ws.close_all, self.http.aclose)
        for part in (self.storage.close, self.log.close, self.audit.close, self._plugin_log.close):
            try:
                part()
            except Exception:  # noqa: BLE001 - close the rest anyway
                _log.exception("plugin %s: error while closing", self.name)

    def __enter__(self) -> "PluginHost":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
