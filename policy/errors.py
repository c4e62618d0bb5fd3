"""Typed errors of the policy layer. Every message names what is wrong and how to fix it."""

from __future__ import annotations


class PolicyError(Exception):
    """Base class of every error raised by `policy`."""


class ManifestError(PolicyError):
    """A plugin.toml that cannot be accepted.

    `source` is the file, `key` the dotted TOML key (empty for file-level problems), `fix` what to do.
    """

    def __init__(self, source: str, key: str, problem: str, fix: str = "") -> None:
        self.source = source
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem + (f"\n  fix: {fix}" if fix else ""))


class ManifestParseError(ManifestError):
    """plugin.toml is not valid TOML (tark's wording: "Failed to parse plugin.toml")."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(
            source,
            "",
            f"Failed to parse plugin.toml: {detail}",
            "check the TOML syntax around the position given",
        )


class PatternError(PolicyError):
    """A capability pattern (http host, env name, fs path) that is malformed or too broad."""
