"""Capability patterns: parsing, validation and matching. Pure functions, no I/O.

Semantics (design.md, "Capability semantics"), fixing tark's matchers:
- http: `host`, `*.host`, optionally with scheme (http, https, ws, wss) and port. A bare host means https/wss on
  443; `*.example.com` admits subdomains only, never the apex; a bare host admits only itself.
- env: exact names or `PREFIX*` (usually `PREFIX_*`); a lone `*` is refused.
- fs_read: absolute or `~/` paths; `*` (one component) and `**` (any depth) globs; a plain entry admits itself
  and everything beneath it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

import attrs
import idna

from policy.errors import PatternError

MAX_PATTERN_LENGTH = 512
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME_FAMILY = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
_DEFAULT_PORT = {"http": 80, "https": 443}


def _normalize_host(raw: str, original: str) -> str:
    host = raw.strip().lower().rstrip(".")
    if not host:
        raise PatternError(f"'{original}' has no host")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise PatternError(f"'{original}': invalid IPv6 address {host}") from exc
        return host
    try:
        ipaddress.IPv4Address(host)
        return host
    except ValueError:
        pass
    host = encode_host(host, original)
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise PatternError(f"'{original}': invalid host name {raw!r} (letters, digits, '-' and '.' only)")
    return host


def encode_host(host: str, original: str) -> str:
    """The ASCII form of a host name: IDNA 2008 (the `idna` package), the encoder httpx uses. The http capability
    sends requests to exactly this form (UrlTarget.url), so the name checked is the name connected to: Python's
    own "idna" codec (IDNA 2003) maps `faß.de` to `fass.de` while httpx would connect to `xn--fa-hia.de`."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise PatternError(f"'{original}': invalid international host name {host!r}: {exc}") from None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


@attrs.frozen
class HttpPattern:
    """One entry of `capabilities.http`."""

    host: str  # lower-case, punycode; IPv6 in brackets
    wildcard: bool = False  # `*.host`: subdomains of host, not host itself
    scheme_family: str | None = None  # "http" or "https"; None = https only (bare host)
    port: int | None = None

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORT[self.scheme_family or "https"]

    @property
    def names_address_literally(self) -> bool:
        """True when the pattern spells out an IP or `localhost`: only then may it reach private addresses."""
        return not self.wildcard and (_is_ip_literal(self.host) or self.host == "localhost")

    def __str__(self) -> str:
        scheme = f"{self.scheme_family}://" if self.scheme_family else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{scheme}{'*.' if self.wildcard else ''}{self.host}{port}"


def parse_http_pattern(text: str) -> HttpPattern:
    if not isinstance(text, str) or not text.strip():
        raise PatternError("an http entry is empty")
    original = text
    text = text.strip()
    if len(text) > MAX_PATTERN_LENGTH:
        raise PatternError(f"http entry is longer than {MAX_PATTERN_LENGTH} characters")
    if any(ch.isspace() for ch in text):
        raise PatternError(f"'{original}' contains whitespace")
    scheme_family = None
    if "://" in text:
        scheme, _, text = text.partition("://")
        scheme = scheme.lower()
        if scheme not in _SCHEME_FAMILY:
            raise PatternError(f"'{original}': scheme '{scheme}' is not one of http, https, ws, wss")
        scheme_family = _SCHEME_FAMILY[scheme]
    text = text.rstrip("/")
    if any(ch in text for ch in "/?#"):
        raise PatternError(f"'{original}': give a host (and optional port), not a path or query")
    if "@" in text:
        raise PatternError(f"'{original}': user info (user@host) is not allowed in a host pattern")
    if text in ("*", "*.*", "**") or text.startswith("*:"):
        raise PatternError(f"'{original}' allows every host; list the hosts the plugin needs")
    port = None
    host_part = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise PatternError(f"'{original}': unterminated IPv6 address")
        host_part, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise PatternError(f"'{original}': unexpected text after the IPv6 address")
            port = _parse_port(rest[1:], original)
    elif ":" in text:
        host_part, _, port_text = text.rpartition(":")
        port = _parse_port(port_text, original)
    wildcard = host_part.startswith("*.")
    if wildcard:
        host_part = host_part[2:]
    if "*" in host_part:
        raise PatternError(f"'{original}': '*' is only allowed as a leading '*.' label")
    host = _normalize_host(host_part, original)
    if wildcard:
        if _is_ip_literal(host):
            raise PatternError(f"'{original}': a wildcard cannot apply to an IP address")
        if "." not in host:
            raise PatternError(f"'{original}' covers a whole top-level domain; name the organisation's domain")
    return HttpPattern(host=host, wildcard=wildcard, scheme_family=scheme_family, port=port)


def _parse_port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise PatternError(f"'{original}': port must be a number from 1 to 65535")
    return int(text)


@attrs.frozen
class UrlTarget:
    """The parts of a request URL that the http policy looks at."""

    scheme_family: str
    host: str
    port: int
    url: str = ""  # the URL to send: as given, with the host in the ASCII form that was checked


class UrlRejected(PatternError):
    """A URL that is malformed or uses a form the policy never admits (user info, odd scheme)."""


def parse_url_target(url: str) -> UrlTarget:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRejected(f"malformed URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEME_FAMILY:
        raise UrlRejected(f"URL scheme '{scheme}' is not http, https, ws or wss")
    if "@" in parts.netloc:
        raise UrlRejected("URLs with user info (user@host) are refused")
    if not parts.hostname:
        raise UrlRejected(f"URL {url!r} has no host")
    raw_host = parts.hostname
    host = f"[{raw_host}]" if ":" in raw_host else raw_host
    try:
        host = _normalize_host(host, url)
    except PatternError as exc:
        raise UrlRejected(str(exc)) from exc
    family = _SCHEME_FAMILY[scheme]
    netloc = host + (f":{port}" if port is not None else "")
    checked_url = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
    return UrlTarget(scheme_family=family, host=host, port=port if port is not None else _DEFAULT_PORT[family],
                     url=checked_url)


def http_pattern_matches(pattern: HttpPattern, target: UrlTarget) -> bool:
    if (pattern.scheme_family or "https") != target.scheme_family:
        return False
    if pattern.effective_port != target.port:
        return False
    if pattern.wildcard:
        return target.host.endswith("." + pattern.host)
    return target.host == pattern.host


def matching_http_pattern(patterns: Iterable[HttpPattern], url: str) -> HttpPattern | None:
    """The first pattern admitting `url`, or None. Malformed URLs raise UrlRejected."""
    target = parse_url_target(url)
    return next((p for p in patterns if http_pattern_matches(p, target)), None)


@attrs.frozen
class EnvPattern:
    """One entry of `capabilities.env`: an exact name, or a prefix when it ends in `*`."""

    name: str
    prefix: bool = False

    def matches(self, variable: str) -> bool:
        return variable.startswith(self.name) if self.prefix else variable == self.name

    def __str__(self) -> str:
        return self.name + ("*" if self.prefix else "")


def parse_env_pattern(text: str) -> EnvPattern:
    if not isinstance(text, str) or not text:
        raise PatternError("an env entry is empty")
    if len(text) > MAX_PATTERN_LENGTH:
        raise PatternError(f"env entry is longer than {MAX_PATTERN_LENGTH} characters")
    if text.strip("*") == "":
        raise PatternError(f"'{text}' exposes the whole environment; list the variables the plugin needs")
    prefix = text.endswith("*")
    name = text[:-1] if prefix else text
    if not _ENV_NAME.match(name):
        raise PatternError(
            f"'{text}' is not a variable name (letters, digits and '_', not starting with a digit)"
            + ("; '*' is only allowed at the end" if "*" in name else "")
        )
    return EnvPattern(name=name, prefix=prefix)


def env_allows(patterns: Iterable[EnvPattern], variable: str) -> bool:
    return any(p.matches(variable) for p in patterns)


@attrs.frozen
class FsPattern:
    """One entry of `capabilities.fs_read`, as written (`~` not yet expanded)."""

    text: str

    @property
    def is_glob(self) -> bool:
        return "*" in self.text

    def expanded(self, home: str) -> str:
        if self.text == "~" or self.text.startswith("~/"):
            return home.rstrip("/") + self.text[1:]
        return self.text


def parse_fs_pattern(text: str) -> FsPattern:
    if not isinstance(text, str) or not text:
        raise PatternError("an fs_read entry is empty")
    if len(text) > MAX_PATTERN_LENGTH:
        raise PatternError(f"fs_read entry is longer than {MAX_PATTERN_LENGTH} characters")
    if "\x00" in text:
        raise PatternError("an fs_read entry contains a NUL byte")
    if not (text.startswith("/") or text.startswith("~/")):
        raise PatternError(
            f"'{text}' is not absolute; use a path starting with '/' or '~/' "
            "(relative paths would depend on the directory tark was started in)"
        )
    if any(ch in text for ch in "?[]{}"):
        raise PatternError(f"'{text}': only '*' and '**' globs are supported")
    parts = [p for p in text.split("/") if p]
    if ".." in parts:
        raise PatternError(f"'{text}' contains '..'; give the canonical path")
    if all(p in ("*", "**") for p in parts[1 if text.startswith("~") else 0 :]):
        raise PatternError(f"'{text}' covers a whole file system tree; name the files or directories needed")
    return FsPattern(text=text)


def fs_glob_regex(expanded: str) -> re.Pattern[str]:
    """Anchored regex for a glob: `**` any depth, `*` within one component, everything else literal."""
    out = []
    for piece in re.split(r"(\*\*|\*)", expanded):
        if piece == "**":
            out.append(".*")
        elif piece == "*":
            out.append("[^/]*")
        else:
            out.append(re.escape(piece))
    return re.compile("^" + "".join(out) + "$")


def fs_allows(expanded_patterns: Iterable[str], canonical_path: str) -> bool:
    """Whether a canonical absolute path is admitted by patterns already expanded and canonicalised."""
    if not canonical_path.startswith("/"):
        return False
    for pattern in expanded_patterns:
        if "*" in pattern:
            if fs_glob_regex(pattern).match(canonical_path):
                return True
        else:
            base = pattern.rstrip("/") or "/"
            if canonical_path == base or canonical_path.startswith(base.rstrip("/") + "/"):
                return True
    return False
