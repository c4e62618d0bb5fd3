"""Where a plugin's limits come from at run time: policy.limits.resolve_limits over the admin policy's [limits]
table (its defaults, then its entry for the plugin). Everything that enforces a limit, and `tark plugin info`,
asks here (docs/limits.md)."""

from __future__ import annotations

from typing import Mapping

from policy.admin_policy import AdminPolicyError
from policy.limits import ResolvedLimits, resolve_limits
from supervisor.consent.policy_file import PolicyLoader


def admin_limits(loader: PolicyLoader | None = None
                 ) -> tuple[Mapping[str, object], Mapping[str, Mapping[str, object]]]:
    """The admin policy's [limits]: (defaults name -> value, per plugin: plugin -> name -> value)."""
    try:
        policy = (loader or PolicyLoader()).current()
    except AdminPolicyError:
        return {}, {}  # a broken policy grants nothing to any plugin (supervisor/consent); limits stay the defaults
    return policy.limit_defaults, policy.limit_plugins


def limits_for(name: str, loader: PolicyLoader | None = None) -> ResolvedLimits:
    defaults, per_plugin = admin_limits(loader)
    return resolve_limits(admin=defaults, per_plugin=per_plugin.get(name, {}))


def display_value(name: str, value: float) -> str:
    """A limit's value for people: sizes in KiB/MiB, durations with their unit."""
    if name.endswith("_bytes"):
        value = int(value)
        for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
            if value >= size and value % size == 0:
                return f"{value // size} {unit}"
        return f"{value} bytes"
    if name.endswith("_ms"):
        return f"{value:g} ms"
    if name.endswith("_s"):
        return f"{value:g} s"
    return f"{value:g}"
