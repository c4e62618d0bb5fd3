"""Consent as the running supervisor applies it: the live effective grants of each plugin and the artifact pins.

`Consent.grants(plugin)` gives a `LiveGrants` whose `current()` costs two stat() calls while nothing changed and
re-resolves (policy.grants.resolve_grants) when the plugin's approval record or the admin policy file changed: a
`tark plugin revoke` reaches a running worker's next host call, in the daemon too. `Consent.verify_pins(plugin)`
refuses to run a wasm or manifest whose sha256 differs from the approved one (a file swapped behind the registry).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Callable

import attrs

from policy.admin_policy import AdminPolicy, AdminPolicyError
from policy.errors import PatternError
from policy.grants import Approval, EffectiveGrants, refused_grants, resolve_grants
from supervisor.capabilities.audit import AuditLog, default_audit_path
from supervisor.consent.approvals import ApprovalStore, ApprovalStoreError, file_identity
from supervisor.consent.policy_file import PolicyLoader
from supervisor.plugin import MANIFEST_FILE, InstalledPlugin

_log = logging.getLogger(__name__)


class PinMismatch(Exception):
    """The plugin's files are not the ones approved; its worker is not started."""


class NotApproved(PinMismatch):
    """The plugin has no approval record."""


@attrs.frozen
class Hashes:
    manifest_sha256: str
    wasm_sha256: str


class _HashCache:
    """sha256 of files, recomputed only when a file's identity (inode, size, mtime) changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[tuple, str]] = {}

    def sha256(self, path: Path) -> str:
        st = os.stat(path)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        key = str(path)
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[0] == identity:
            return known[1]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._known[key] = (identity, value)
        return value


class Consent:
    def __init__(self, approvals: ApprovalStore | None = None, policies: PolicyLoader | None = None,
                 audit_path: Path | None = None, home: Callable[[], str] | None = None) -> None:
        self.approvals = approvals or ApprovalStore()
        self._audit_path = audit_path or default_audit_path()
        self.policies = policies or PolicyLoader(on_load=self._audit_policy_load)
        self._home = home or (lambda: os.path.expanduser("~"))
        self._hashes = _HashCache()

    def _event(self, plugin: str | None, kind: str, **fields: object) -> None:
        audit = AuditLog(self._audit_path, plugin)
        try:
            audit.event(kind, **fields)
        finally:
            audit.close()

    def _audit_policy_load(self, policy: AdminPolicy | None, error: str | None) -> None:
        if error is not None:
            _log.error("admin policy refused, every plugin is denied: %s", error)
            self._event(None, "policy_load", ok=False, error=error)
        else:
            assert policy is not None
            self._event(None, "policy_load", ok=True, source=policy.source,
                        approvals=policy.install.approvals, required_layers=list(policy.required_layers))

    def policy(self) -> AdminPolicy:
        """The admin policy in force; raises AdminPolicyError when it is broken (fail closed)."""
        return self.policies.current()

    def hashes(self, plugin: InstalledPlugin) -> Hashes:
        return Hashes(self._hashes.sha256(plugin.directory / MANIFEST_FILE), self._hashes.sha256(plugin.wasm_path))

    def resolve(self, plugin: InstalledPlugin) -> EffectiveGrants:
        name, caps = plugin.name, plugin.manifest.capabilities
        try:
            policy = self.policy()
        except AdminPolicyError as exc:
            return refused_grants(name, caps, f"the admin policy is broken, nothing is granted: {exc}")
        try:
            approval = self.approvals.get(name)
        except ApprovalStoreError as exc:
            return refused_grants(name, caps, str(exc))
        try:
            return resolve_grants(name, caps, approval, policy, home=self._home())
        except PatternError as exc:
            return refused_grants(name, caps, f"the manifest has a malformed capability: {exc}")

    def grants(self, plugin: InstalledPlugin) -> "LiveGrants":
        return LiveGrants(self, plugin)

    def verify_pins(self, plugin: InstalledPlugin) -> Hashes:
        """Raise PinMismatch unless the files on disk are the approved ones (audited)."""
        name = plugin.name
        try:
            approval = self.approvals.get(name)
        except ApprovalStoreError as exc:
            raise PinMismatch(f"Plugin '{name}' cannot start: {exc}") from None
        if approval is None:
            raise NotApproved(
                f"Plugin '{name}' has no approval record (installed before approvals existed, or copied by hand); "
                f"review it with `tark plugin permissions {name}`, then run `tark plugin approve {name}`")
        current = self.hashes(plugin)
        changed = [what for what, approved, now in (
            ("plugin.toml", approval.manifest_sha256, current.manifest_sha256),
            (plugin.manifest.plugin.wasm, approval.wasm_sha256, current.wasm_sha256)) if approved != now]
        if changed:
            self._event(name, "pin_refused", changed=changed, approved_wasm_sha256=approval.wasm_sha256,
                        current_wasm_sha256=current.wasm_sha256,
                        approved_manifest_sha256=approval.manifest_sha256,
                        current_manifest_sha256=current.manifest_sha256)
            raise PinMismatch(
                f"Plugin '{name}' was changed on disk since it was approved ({', '.join(changed)} differ from the "
                f"approved sha256); it is not started. If you made this change, review it with "
                f"`tark plugin permissions {name}` and run `tark plugin approve {name}`; otherwise reinstall it.")
        return current

    def approved_wasm_sha256(self, plugin: InstalledPlugin) -> str | None:
        """The wasm digest the user approved (the worker pool compiles only those bytes); None without a record,
        which verify_pins already refuses."""
        try:
            approval = self.approvals.get(plugin.name)
        except ApprovalStoreError:
            return None
        return approval.wasm_sha256 if approval is not None else None

    def record(self, name: str, approval: Approval, kind: str, items: list[str] | tuple[str, ...]) -> None:
        """Store an approval and audit it (`kind` is approval, revocation or update)."""
        self.approvals.put(name, approval)
        self._event(name, kind, items=list(items), wasm_sha256=approval.wasm_sha256,
                    manifest_sha256=approval.manifest_sha256)


class LiveGrants:
    """The effective grants of one plugin, re-resolved when its approval record or the admin policy changes."""

    def __init__(self, consent: Consent, plugin: InstalledPlugin) -> None:
        self._consent = consent
        self._plugin = plugin
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._grants: EffectiveGrants | None = None
        self._record = consent.approvals.record_path(plugin.name)

    def __call__(self) -> EffectiveGrants:
        consent = self._consent
        key = (file_identity(self._record), consent.policies.identity())
        with self._lock:
            if key != self._key or self._grants is None:
                self._grants = consent.resolve(self._plugin)
                self._key = key
            return self._grants
