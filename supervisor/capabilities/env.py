"""tark:env — environment variables the manifest names (exact or `PREFIX_*`): the plugin's own secrets first
(`tark plugin secret set`, supervisor/secrets.py), then the supervisor's environment.

Codes (tark-core-abi.md §1.4): denied -2, unset 0 (nothing written), otherwise the value's length. A value
longer than the guest's buffer (env_max_result_bytes) is refused with -1 instead of overrunning it.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import attrs

from policy.grants import EffectiveGrants, EnvAccess
from policy.limits import Limits
from supervisor.capabilities.audit import AuditLog
from supervisor.capabilities.outcome import DENIED, FAILED, Outcome
from supervisor.secrets import SecretError, SecretReader


@attrs.frozen
class EnvConfig:
    grants: Callable[[], EffectiveGrants]  # the plugin's current effective grants (policy/grants.py)
    max_result_bytes: int

    @classmethod
    def derive(cls, grants: Callable[[], EffectiveGrants], limits: Limits) -> "EnvConfig":
        return cls(grants=grants, max_result_bytes=limits.env_max_result_bytes)


class EnvCapability:
    def __init__(self, config: EnvConfig, environ: Mapping[str, str], audit: AuditLog,
                 log: logging.Logger, secrets: SecretReader | None = None) -> None:
        self.config = config
        self._environ = environ
        self._secrets = secrets
        self._audit = audit
        self._log = log

    def get(self, name: str) -> Outcome:
        decision = self.config.grants().check(EnvAccess(name))
        if not decision.allowed:
            self._audit.denied("env", name, decision.reason)
            return Outcome(DENIED)
        try:
            value = self._secrets.get(name) if self._secrets is not None else None
        except SecretError as exc:
            self._log.error("env %s: %s", name, exc)
            return Outcome(FAILED)
        if value is not None:
            self._audit.allowed("env", name, f"{decision.reason}; answered from the plugin's secrets")
        else:
            self._audit.allowed("env", name, decision.reason)
            value = self._environ.get(name)
        if value is None:
            return Outcome(0)
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes from os.environ (surrogateescape): tark's "non-Unicode" -> 0
            return Outcome(0)
        if len(data) > self.config.max_result_bytes:
            self._log.warning("env %s: value of %d bytes exceeds the %d-byte result limit", name, len(data),
                              self.config.max_result_bytes)
            return Outcome(FAILED)
        return Outcome.written(data)
