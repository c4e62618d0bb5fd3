"""The capability decision: may this plugin do this? Pure; the supervisor asks, executes and audits.

For now a capability is granted iff the manifest declares it (matched with policy.patterns). `check` is the
single entry point so that approvals and the admin policy can later be added in one place.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Union

import attrs

from policy.errors import PatternError
from policy.manifest import Capabilities
from policy.patterns import env_allows, fs_allows, matching_http_pattern


@attrs.frozen
class StorageAccess:
    """Any tark:storage operation."""

    @property
    def capability(self) -> str:
        return "storage"

    @property
    def target(self) -> str:
        return ""


@attrs.frozen
class HttpAccess:
    """A request to `url` (http, https, ws or wss), including every redirect hop."""

    url: str

    @property
    def capability(self) -> str:
        return "http"

    @property
    def target(self) -> str:
        return self.url


@attrs.frozen
class EnvAccess:
    name: str

    @property
    def capability(self) -> str:
        return "env"

    @property
    def target(self) -> str:
        return self.name


def _unchanged(path: str) -> str:
    return path


@attrs.frozen
class FsReadAccess:
    """Reading the file at `path`, which the caller has already expanded and canonicalised.

    Patterns are compared after `~` expansion with `home` and canonicalisation with `resolve` (the supervisor
    passes os.path.realpath; policy itself does no I/O).
    """

    path: str
    home: str
    resolve: Callable[[str], str] = _unchanged

    @property
    def capability(self) -> str:
        return "fs_read"

    @property
    def target(self) -> str:
        return self.path


@attrs.frozen
class ShellAccess:
    command: str = ""

    @property
    def capability(self) -> str:
        return "shell"

    @property
    def target(self) -> str:
        return self.command


CapabilityRequest = Union[StorageAccess, HttpAccess, EnvAccess, FsReadAccess, ShellAccess]


@attrs.frozen
class Decision:
    allowed: bool
    reason: str
    pattern: str | None = None  # the manifest entry that allowed it


def check(caps: Capabilities, request: CapabilityRequest) -> Decision:
    """Decide `request` against the plugin's declared capabilities. Never raises for malformed targets."""
    try:
        return _check(caps, request)
    except PatternError as exc:
        return Decision(False, str(exc))


def _check(caps: Capabilities, request: CapabilityRequest) -> Decision:
    if isinstance(request, StorageAccess):
        if caps.storage:
            return Decision(True, "storage = true in the manifest", "storage")
        return Decision(False, "the manifest does not declare storage = true")
    if isinstance(request, HttpAccess):
        pattern = matching_http_pattern(caps.http_patterns, request.url)
        if pattern is None:
            return Decision(False, "no capabilities.http entry matches this scheme, host and port")
        return Decision(True, f"matches capabilities.http entry '{pattern}'", str(pattern))
    if isinstance(request, EnvAccess):
        for pattern in caps.env_patterns:
            if env_allows([pattern], request.name):
                return Decision(True, f"matches capabilities.env entry '{pattern}'", str(pattern))
        return Decision(False, "no capabilities.env entry names this variable")
    if isinstance(request, FsReadAccess):
        for pattern in caps.fs_read_patterns:
            if fs_allows([_canonical_pattern(pattern.expanded(request.home), request.resolve)], request.path):
                return Decision(True, f"matches capabilities.fs_read entry '{pattern.text}'", pattern.text)
        return Decision(False, "no capabilities.fs_read entry covers this path")
    if isinstance(request, ShellAccess):
        if caps.shell:
            return Decision(True, "shell = true in the manifest", "shell")
        return Decision(False, "the manifest does not declare shell = true")
    return Decision(False, f"unknown capability request {type(request).__name__}")


def _canonical_pattern(expanded: str, resolve: Callable[[str], str]) -> str:
    """Canonicalise the literal directory part of a pattern; glob components are kept as written."""
    star = expanded.find("*")
    if star < 0:
        return resolve(expanded)
    cut = expanded.rfind("/", 0, star)
    literal, rest = expanded[:cut], expanded[cut:]
    return (resolve(literal) if literal else "").rstrip("/") + rest


def refused_address_reason(address: str) -> str | None:
    """Why a resolved IP address may not be reached without a pattern naming it literally, or None if public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{kind.replace('_', '-')} address"
    if not ip.is_global:
        return "non-public address"
    return None
