"""Strict SemVer 2.0.0 parsing and comparison, and the tark version this runtime is compatible with."""

from __future__ import annotations

import re

import attrs

# The tark release whose plugin ABI this runtime implements (shared/reference/tark-core-abi.md basis).
COMPATIBLE_TARK_VERSION = "0.12.6"
SUPPORTED_API_VERSIONS = ("0.1",)

# The official regex from semver.org.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@attrs.frozen(order=False)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    def _key(self) -> tuple:
        # A release sorts after its pre-releases; numeric identifiers sort before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: "SemVer") -> bool:
        return self._key() < other._key()

    def __le__(self, other: "SemVer") -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: "SemVer") -> bool:
        return self._key() > other._key()

    def __ge__(self, other: "SemVer") -> bool:
        return self._key() >= other._key()


def parse_semver(text: str) -> SemVer | None:
    """The parsed version, or None when `text` is not strict SemVer (`1.0` and `v1.0.0` are not)."""
    match = _SEMVER.match(text) if isinstance(text, str) and len(text) <= 256 else None
    if not match:
        return None
    major, minor, patch, pre, _build = match.groups()
    return SemVer(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else ())
