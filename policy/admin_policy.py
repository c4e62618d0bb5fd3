"""The admin policy (`/etc/tark/policy.toml` or `$TARK_POLICY`): limits no manifest and no user approval can widen.

Pure: `parse_admin_policy(text)` turns TOML text into a frozen `AdminPolicy`; the supervisor reads the file and
checks its owner and mode (supervisor/admin_policy_file.py). Every problem raises AdminPolicyError naming the key.
See docs/permissions.md for the file format; ops/policy.example.toml is a commented example.

Sections:
  [deny]     http, env, fs_read (lists of capability patterns), storage, shell (booleans): never granted.
  [allow]    http, env, fs_read, credentials_path (lists), storage, shell (booleans). A list that is present
             bounds what any plugin may get of that kind; an absent list bounds nothing (except: shell needs
             `allow.shell = true` only when approvals are admin-only). fs_read entries here are also the only
             way to open paths under /proc, /sys and /dev.
  [limits]   default values of policy.limits.Limits fields; [limits.plugins.NAME] per-plugin overrides;
             max_workers and min_available_memory_mib bound the whole supervisor (policy/capacity.py).
  [install]  approvals = "user" | "admin-only"; local = bool; git_hosts = [...]; [install.pinned] NAME = sha256.
  [lockdown] require = ["seccomp", "landlock", "netns", "uid"]: worker layers that must be active.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Mapping

import attrs

from policy.errors import PatternError, PolicyError
from policy.limits import Limits
from policy.patterns import (
    EnvPattern,
    FsPattern,
    HttpPattern,
    parse_env_pattern,
    parse_fs_pattern,
    parse_http_pattern,
)

LOCKDOWN_LAYERS = ("seccomp", "landlock", "netns", "uid")
APPROVAL_MODES = ("user", "admin-only")
MAX_POLICY_BYTES = 256 * 1024
_PLUGIN_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LIMIT_NAMES = frozenset(f.name for f in attrs.fields(Limits))
SUPERVISOR_LIMITS = ("max_workers", "min_available_memory_mib")  # [limits] keys for the whole supervisor


class AdminPolicyError(PolicyError):
    """An admin policy that cannot be used. The supervisor then refuses every plugin (fails closed)."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem)


@attrs.frozen
class CapabilityRules:
    """One of [deny] / [allow]. `None` lists are absent (bound nothing); booleans are None when not given."""

    http: tuple[HttpPattern, ...] | None = None
    env: tuple[EnvPattern, ...] | None = None
    fs_read: tuple[FsPattern, ...] | None = None
    credentials_path: tuple[FsPattern, ...] | None = None
    storage: bool | None = None
    shell: bool | None = None


@attrs.frozen
class InstallRules:
    approvals: str = "user"
    local: bool = True
    git_hosts: tuple[str, ...] | None = None  # None = any host
    pinned: Mapping[str, str] = attrs.field(factory=dict)  # plugin name -> wasm sha256

    @property
    def admin_only(self) -> bool:
        return self.approvals == "admin-only"


@attrs.frozen
class AdminPolicy:
    """The parsed admin policy. `AdminPolicy()` is "no policy": nothing denied, nothing bounded."""

    source: str = "(no admin policy)"
    deny: CapabilityRules = CapabilityRules()
    allow: CapabilityRules = CapabilityRules()
    limit_defaults: Mapping[str, float] = attrs.field(factory=dict)
    limit_plugins: Mapping[str, Mapping[str, float]] = attrs.field(factory=dict)
    install: InstallRules = InstallRules()
    required_layers: tuple[str, ...] = ()
    max_workers: int | None = None  # workers running at once (policy/capacity.py)
    min_available_memory_mib: float | None = None  # memory a worker start must leave available

    @property
    def present(self) -> bool:
        return self.source != AdminPolicy().source


_SECTIONS = {"deny", "allow", "limits", "install", "lockdown"}
_RULE_KEYS = {"deny": {"http", "env", "fs_read", "storage", "shell"},
              "allow": {"http", "env", "fs_read", "credentials_path", "storage", "shell"}}


def parse_admin_policy(text: str | bytes, source: str = "policy.toml") -> AdminPolicy:
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_BYTES:
            raise AdminPolicyError(source, "", f"larger than {MAX_POLICY_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AdminPolicyError(source, "", f"not UTF-8 (byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AdminPolicyError(source, "", f"not valid TOML: {exc}") from None
    _no_unknown(raw, _SECTIONS, source, "")
    for section in _SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise AdminPolicyError(source, section, "must be a table ([" + section + "])")
    limits = dict(raw.get("limits", {}))
    supervisor_wide = {name: limits.pop(name) for name in SUPERVISOR_LIMITS if name in limits}
    defaults, per_plugin = _limits(limits, source)
    if "max_workers" in supervisor_wide and (isinstance(supervisor_wide["max_workers"], bool) or not isinstance(
            supervisor_wide["max_workers"], int) or supervisor_wide["max_workers"] < 1):
        raise AdminPolicyError(source, "limits.max_workers",
                               f"must be a whole number of at least 1, got {supervisor_wide['max_workers']!r}")
    _limit_values({k: v for k, v in supervisor_wide.items() if k != "max_workers"}, source, "limits.",
                  names=frozenset(SUPERVISOR_LIMITS))
    return AdminPolicy(
        source=source,
        deny=_rules(raw.get("deny", {}), "deny", source),
        allow=_rules(raw.get("allow", {}), "allow", source),
        limit_defaults=defaults,
        limit_plugins=per_plugin,
        install=_install(raw.get("install", {}), source),
        required_layers=_lockdown(raw.get("lockdown", {}), source),
        max_workers=supervisor_wide.get("max_workers"),
        min_available_memory_mib=supervisor_wide.get("min_available_memory_mib"),
    )


def _no_unknown(table: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise AdminPolicyError(source, prefix + unknown[0],
                               f"unknown key (known: {', '.join(sorted(known))}); a typo here would silently "
                               "weaken the policy, so it is refused")


def _bool(value: Any, source: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise AdminPolicyError(source, key, f"must be true or false, got {value!r}")
    return value


def _strings(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AdminPolicyError(source, key, "must be a list of strings")
    return value


def _patterns(value: Any, parse, source: str, key: str) -> tuple:
    found = []
    for entry in _strings(value, source, key):
        try:
            found.append(parse(entry))
        except PatternError as exc:
            raise AdminPolicyError(source, key, str(exc)) from None
    return tuple(found)


def _rules(table: Mapping[str, Any], section: str, source: str) -> CapabilityRules:
    _no_unknown(table, _RULE_KEYS[section], source, f"{section}.")
    key = f"{section}."
    return CapabilityRules(
        http=_patterns(table["http"], parse_http_pattern, source, key + "http") if "http" in table else None,
        env=_patterns(table["env"], parse_env_pattern, source, key + "env") if "env" in table else None,
        fs_read=_patterns(table["fs_read"], parse_fs_pattern, source, key + "fs_read") if "fs_read" in table else None,
        credentials_path=(_patterns(table["credentials_path"], parse_fs_pattern, source, key + "credentials_path")
                          if "credentials_path" in table else None),
        storage=_bool(table["storage"], source, key + "storage") if "storage" in table else None,
        shell=_bool(table["shell"], source, key + "shell") if "shell" in table else None,
    )


def _limit_values(table: Mapping[str, Any], source: str, prefix: str,
                  names: frozenset[str] = _LIMIT_NAMES) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, value in table.items():
        if name in SUPERVISOR_LIMITS and names is _LIMIT_NAMES:
            raise AdminPolicyError(source, prefix + name, "bounds the whole supervisor: set it in [limits] itself")
        if name not in names:
            raise AdminPolicyError(source, prefix + name, "not a limit name (see `tark plugin info` for the list)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise AdminPolicyError(source, prefix + name, f"must be a positive number, got {value!r}")
        values[name] = value
    return values


def _limits(table: Mapping[str, Any], source: str) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    plugins = table.get("plugins", {})
    if not isinstance(plugins, dict):
        raise AdminPolicyError(source, "limits.plugins", "must be a table of [limits.plugins.NAME] tables")
    defaults = _limit_values({k: v for k, v in table.items() if k != "plugins"}, source, "limits.")
    per_plugin = {}
    for name, values in plugins.items():
        if not _PLUGIN_NAME.match(name):
            raise AdminPolicyError(source, f"limits.plugins.{name}", "not a plugin name")
        if not isinstance(values, dict):
            raise AdminPolicyError(source, f"limits.plugins.{name}", "must be a table")
        per_plugin[name] = _limit_values(values, source, f"limits.plugins.{name}.")
    return defaults, per_plugin


def _install(table: Mapping[str, Any], source: str) -> InstallRules:
    _no_unknown(table, {"approvals", "local", "git_hosts", "pinned"}, source, "install.")
    approvals = table.get("approvals", "user")
    if approvals not in APPROVAL_MODES:
        raise AdminPolicyError(source, "install.approvals", f"must be \"user\" or \"admin-only\", got {approvals!r}")
    hosts = None
    if "git_hosts" in table:
        hosts = tuple(h.strip().lower().rstrip(".") for h in _strings(table["git_hosts"], source, "install.git_hosts"))
        if not all(hosts):
            raise AdminPolicyError(source, "install.git_hosts", "an entry is empty")
    pinned = table.get("pinned", {})
    if not isinstance(pinned, dict):
        raise AdminPolicyError(source, "install.pinned", "must be a table of NAME = \"sha256\"")
    for name, digest in pinned.items():
        if not _PLUGIN_NAME.match(name) or not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise AdminPolicyError(source, f"install.pinned.{name}", "must be a plugin name = a 64-hex wasm sha256")
    return InstallRules(
        approvals=approvals,
        local=_bool(table["local"], source, "install.local") if "local" in table else True,
        git_hosts=hosts,
        pinned={k: v.lower() for k, v in pinned.items()},
    )


def _lockdown(table: Mapping[str, Any], source: str) -> tuple[str, ...]:
    _no_unknown(table, {"require"}, source, "lockdown.")
    layers = _strings(table.get("require", []), source, "lockdown.require")
    for layer in layers:
        if layer not in LOCKDOWN_LAYERS:
            raise AdminPolicyError(source, "lockdown.require", f"unknown layer {layer!r} "
                                                                 f"(known: {', '.join(LOCKDOWN_LAYERS)})")
    return tuple(dict.fromkeys(layers))


def install_refusal(policy: AdminPolicy, *, name: str, git_host: str | None, wasm_sha256: str) -> str | None:
    """Why the admin policy forbids installing this plugin from this source, or None. `git_host` None = local."""
    rules = policy.install
    if git_host is None and not rules.local:
        return f"the admin policy ({policy.source}) does not allow installing plugins from local directories"
    if git_host is not None and rules.git_hosts is not None and git_host.lower() not in rules.git_hosts:
        return (f"the admin policy ({policy.source}) allows git installs only from "
                f"{', '.join(rules.git_hosts) or 'no host'}, not {git_host}")
    pinned = rules.pinned.get(name)
    if pinned is not None and pinned != wasm_sha256:
        return (f"the admin policy ({policy.source}) pins plugin '{name}' to wasm sha256 {pinned}; "
                f"this build is {wasm_sha256}")
    return None
