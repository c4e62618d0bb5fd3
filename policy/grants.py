"""Effective grants: what a plugin may do = declared (manifest) ∩ approved (user) ∩ allowed (admin policy).

Pure. `resolve_grants` runs once per (manifest, approval, policy) and returns a frozen `EffectiveGrants` with the
patterns already parsed and a status (with the reason) for every declared item; capability handlers ask
`grants.check(request)` for each host call. docs/permissions.md describes the model for users and operators.

Items are named `storage`, `shell`, `http:PATTERN` (the pattern normalised: lower case, punycode), `env:NAME` and
`fs_read:PATH` (as written). Rules that hold whatever anything grants, each a small function below:
- `/proc`, `/sys` and `/dev` are never readable unless an admin `[allow] fs_read` entry itself names a path
  there (so `fs_read = ["/proc/self/environ"]` cannot read the supervisor's environment);
- tark's private paths (its directories, every plugin's credentials file, every project's `.tark/plugins/`) are
  never readable, except a plugin's own credentials file when its own effective fs_read names it;
- http hosts are compared in IDNA 2008 form, the form the request is then sent with (policy.patterns).
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Iterable, Literal, Mapping, Union

import attrs

from policy.admin_policy import AdminPolicy, CapabilityRules
from policy.errors import PatternError
from policy.manifest import Capabilities
from policy.patterns import (
    EnvPattern,
    FsPattern,
    HttpPattern,
    fs_allows,
    fs_glob_regex,
    http_pattern_matches,
    parse_env_pattern,
    parse_fs_pattern,
    parse_http_pattern,
    parse_url_target,
)

SENSITIVE_ROOTS = ("/proc", "/sys", "/dev")

# ------------------------------------------------------------------------------------------------ requests


@attrs.frozen
class StorageAccess:
    """Any tark:storage operation."""

    capability = "storage"

    @property
    def target(self) -> str:
        return ""


@attrs.frozen
class HttpAccess:
    """A request to `url` (http, https, ws or wss), including every redirect hop."""

    url: str
    capability = "http"

    @property
    def target(self) -> str:
        return self.url


@attrs.frozen
class EnvAccess:
    name: str
    capability = "env"

    @property
    def target(self) -> str:
        return self.name


def _unchanged(path: str) -> str:
    return path


@attrs.frozen
class FsReadAccess:
    """Reading the file at `path`, which the caller has already expanded and canonicalised.

    Patterns are compared after `~` expansion with `home` and canonicalisation with `resolve` (the supervisor
    passes os.path.realpath; policy itself does no I/O). `private` are canonical paths no plugin may read (each
    covers what is beneath it); `own_credentials` is the canonical path of this plugin's own credentials file.
    """

    path: str
    home: str
    resolve: Callable[[str], str] = _unchanged
    private: tuple[str, ...] = ()
    own_credentials: str | None = None
    capability = "fs_read"

    @property
    def target(self) -> str:
        return self.path


@attrs.frozen
class ShellAccess:
    command: str = ""
    capability = "shell"

    @property
    def target(self) -> str:
        return self.command


CapabilityRequest = Union[StorageAccess, HttpAccess, EnvAccess, FsReadAccess, ShellAccess]


@attrs.frozen
class Decision:
    allowed: bool
    reason: str
    pattern: str | None = None  # the granted item's pattern that allowed it


# ------------------------------------------------------------------------------------------------ approvals


@attrs.frozen
class Approval:
    """What the user approved for one plugin, bound to the exact manifest and wasm it was approved for."""

    manifest_sha256: str
    wasm_sha256: str
    items: frozenset[str] = frozenset()
    pending: frozenset[str] = frozenset()  # new or widened by an update, waiting for approval
    revoked: frozenset[str] = frozenset()  # revoked by the user (kept to explain the denial)


Kind = Literal["storage", "shell", "http", "env", "fs_read"]


def http_item(text: str) -> str:
    return f"http:{parse_http_pattern(text)}"


def declared_items(caps: Capabilities) -> tuple[str, ...]:
    """Every item the manifest declares, in a stable order. Raises PatternError for a malformed entry."""
    items: list[str] = []
    if caps.storage:
        items.append("storage")
    items += [http_item(p) for p in caps.http]
    items += [f"env:{parse_env_pattern(p)}" for p in caps.env]
    items += [f"fs_read:{parse_fs_pattern(p).text}" for p in caps.fs_read]
    if caps.shell:
        items.append("shell")
    return tuple(dict.fromkeys(items))


def parse_item(item: str) -> tuple[Kind, str]:
    """("http", "api.example.com") for "http:api.example.com". Raises PatternError naming the item."""
    if item in ("storage", "shell"):
        return item, ""  # type: ignore[return-value]
    kind, sep, value = item.partition(":")
    if not sep or kind not in ("http", "env", "fs_read") or not value:
        raise PatternError(f"'{item}' is not a capability item; items look like storage, shell, "
                           "http:api.example.com, env:API_KEY, fs_read:~/.config/app/creds.json")
    if kind == "http":
        return "http", str(parse_http_pattern(value))
    if kind == "env":
        return "env", str(parse_env_pattern(value))
    return "fs_read", parse_fs_pattern(value).text


def normalize_item(item: str) -> str:
    kind, value = parse_item(item)
    return f"{kind}:{value}" if value else kind


@attrs.frozen
class CapabilityDiff:
    unchanged: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]


def diff_items(old: Iterable[str], new: Iterable[str]) -> CapabilityDiff:
    old_t, new_t = tuple(old), tuple(new)
    return CapabilityDiff(unchanged=tuple(i for i in new_t if i in old_t),
                          added=tuple(i for i in new_t if i not in old_t),
                          removed=tuple(i for i in old_t if i not in new_t))


def carried_over(previous: Approval | None, new_items: Iterable[str], manifest_sha256: str,
                 wasm_sha256: str) -> Approval:
    """The approval after an update: unchanged items keep their grant, new or widened ones are pending."""
    new_t = tuple(new_items)
    kept = frozenset(i for i in new_t if previous is not None and i in previous.items)
    pending = frozenset(i for i in new_t if i not in kept)
    revoked = frozenset(i for i in new_t if previous is not None and i in previous.revoked)
    return Approval(manifest_sha256, wasm_sha256, kept, pending - revoked, revoked)


# ------------------------------------------------------------------------------------------------ subsumption


def _family(p: HttpPattern) -> str:
    return p.scheme_family or "https"


def http_covers(outer: HttpPattern, inner: HttpPattern) -> bool:
    """Every URL `inner` admits, `outer` admits too."""
    if _family(outer) != _family(inner) or outer.effective_port != inner.effective_port:
        return False
    if outer.wildcard:
        return inner.host.endswith("." + outer.host)
    return not inner.wildcard and inner.host == outer.host


def env_covers(outer: EnvPattern, inner: EnvPattern) -> bool:
    if outer.prefix:
        return inner.name.startswith(outer.name)
    return not inner.prefix and inner.name == outer.name


def _literal_prefix(path: str) -> str:
    star = path.find("*")
    return path if star < 0 else path[: path.rfind("/", 0, star)] or "/"


def fs_covers(outer: str, inner: str) -> bool:
    """For expanded paths: every path `inner` admits, `outer` admits too (conservative for globs)."""
    if "*" in outer:
        return "*" not in inner and bool(fs_glob_regex(outer).match(inner))
    return fs_allows([outer], _literal_prefix(inner))


def _overlap(covers: Callable, a, b) -> bool:
    return covers(a, b) or covers(b, a)


def fs_overlaps(a: str, b: str) -> bool:
    if fs_covers(a, b) or fs_covers(b, a):
        return True
    # two globs, or a glob and a path beneath its literal part: may overlap
    return fs_allows([_literal_prefix(a)], _literal_prefix(b)) or fs_allows([_literal_prefix(b)], _literal_prefix(a))


# ------------------------------------------------------------------------------------------------ item status

AdminVerdict = Literal["allowed", "narrowed", "denied", "outside-allow", "policy-error"]


@attrs.frozen
class ItemStatus:
    item: str
    kind: str
    approved: bool
    approval_note: str  # why approved or not
    admin: AdminVerdict
    admin_note: str
    effective: bool

    @property
    def why(self) -> str:
        if self.effective:
            return self.approval_note + (f"; {self.admin_note}" if self.admin == "narrowed" else "")
        if self.admin in ("denied", "outside-allow", "policy-error"):
            return self.admin_note
        return self.approval_note


def _admin_verdict(kind: str, value: str, policy: AdminPolicy, home: str) -> tuple[AdminVerdict, str]:
    deny, allow, src = policy.deny, policy.allow, policy.source
    if kind in ("storage", "shell"):
        if getattr(deny, kind):
            return "denied", f"blocked by the admin policy ({src}): [deny] {kind} = true"
        if getattr(allow, kind) is False:
            return "outside-allow", f"blocked by the admin policy ({src}): [allow] {kind} = false"
        return "allowed", ""
    if kind == "http":
        item, covers, overlaps = parse_http_pattern(value), http_covers, lambda a, b: _overlap(http_covers, a, b)
        text = str
    elif kind == "env":
        item, covers, overlaps = parse_env_pattern(value), env_covers, lambda a, b: _overlap(env_covers, a, b)
        text = str
    else:
        item = FsPattern(value).expanded(home)
        covers, overlaps = fs_covers, fs_overlaps

        def text(p: FsPattern) -> str:
            return p.text

        def exp(p: FsPattern) -> str:
            return p.expanded(home)
    conv = exp if kind == "fs_read" else (lambda p: p)
    for entry in getattr(deny, kind) or ():
        if covers(conv(entry), item):
            return "denied", f"blocked by the admin policy ({src}): [deny] {kind} entry '{text(entry)}'"
    notes = [f"[deny] {kind} '{text(e)}' applies" for e in getattr(deny, kind) or () if overlaps(conv(e), item)]
    bound = getattr(allow, kind)
    if bound is not None:
        if not any(overlaps(conv(e), item) for e in bound):
            return "outside-allow", f"outside the admin policy's [allow] {kind} list ({src})"
        if not any(covers(conv(e), item) for e in bound):
            notes.append(f"only what [allow] {kind} also admits")
    if notes:
        return "narrowed", f"narrowed by the admin policy ({src}): " + "; ".join(notes)
    return "allowed", ""


def _admin_approves(kind: str, value: str, policy: AdminPolicy, home: str) -> bool:
    """In admin-only mode an item counts as approved when [allow] covers it."""
    allow = policy.allow
    if kind in ("storage", "shell"):
        return getattr(allow, kind) is True
    bound = getattr(allow, kind)
    if bound is None:
        return False
    if kind == "http":
        return any(http_covers(e, parse_http_pattern(value)) for e in bound)
    if kind == "env":
        return any(env_covers(e, parse_env_pattern(value)) for e in bound)
    return any(fs_covers(e.expanded(home), FsPattern(value).expanded(home)) for e in bound)


def _approval_note(name: str, item: str, approval: Approval | None, policy: AdminPolicy, admin_ok: bool
                   ) -> tuple[bool, str]:
    if policy.install.admin_only:
        if admin_ok:
            return True, f"approved by the admin policy ({policy.source})"
        return False, (f"not approved: approvals are admin-only on this machine and the admin policy "
                       f"({policy.source}) [allow] does not cover it")
    if approval is None:
        return False, (f"not approved: '{name}' has no approval record (installed before approvals or copied by "
                       f"hand); review with `tark plugin permissions {name}`, then `tark plugin approve {name}`")
    if item in approval.items:
        return True, "approved"
    if item in approval.revoked:
        return False, f"revoked; approve again with `tark plugin approve {name} {item}`"
    if item in approval.pending:
        return False, (f"pending approval: new or widened in this version; approve with "
                       f"`tark plugin approve {name} {item}`")
    return False, f"not approved; approve with `tark plugin approve {name} {item}`"


# ------------------------------------------------------------------------------------------------ grants


@attrs.frozen
class EffectiveGrants:
    plugin: str
    items: tuple[ItemStatus, ...]
    storage: bool
    shell: bool
    http: tuple[HttpPattern, ...]
    env: tuple[EnvPattern, ...]
    fs_read: tuple[FsPattern, ...]
    deny: CapabilityRules = CapabilityRules()
    allow: CapabilityRules = CapabilityRules()
    admin_fs_read: tuple[FsPattern, ...] = ()  # admin [allow] fs_read, the only way into SENSITIVE_ROOTS
    problem: str | None = None  # set when nothing can be granted (broken policy or approval store)

    def status(self, item: str) -> ItemStatus | None:
        return next((s for s in self.items if s.item == item), None)

    @property
    def literal_http_hosts(self) -> tuple[HttpPattern, ...]:
        """Effective patterns that name an address literally (only they may reach private addresses)."""
        return tuple(p for p in self.http if p.names_address_literally)

    def check(self, request: CapabilityRequest) -> Decision:
        """Decide one host call. Never raises for malformed targets."""
        if self.problem is not None:
            return Decision(False, self.problem)
        try:
            return self._check(request)
        except PatternError as exc:
            return Decision(False, str(exc))

    def _missing(self, kind: str, matches: Callable[[str], bool], fallback: str) -> Decision:
        """The denial for a request no effective item admits: name the declared item that would, if any."""
        for status in self.items:
            if status.kind == kind and not status.effective and matches(status.item.partition(":")[2]):
                return Decision(False, f"'{status.item}' {status.why}")
        return Decision(False, fallback)

    def _check(self, request: CapabilityRequest) -> Decision:
        if isinstance(request, (StorageAccess, ShellAccess)):
            kind = request.capability
            if getattr(self, kind):
                return Decision(True, f"{kind} granted", kind)
            status = self.status(kind)
            return Decision(False, f"'{kind}' {status.why}" if status else f"the manifest does not declare {kind} = true")
        if isinstance(request, HttpAccess):
            return self._check_http(request.url)
        if isinstance(request, EnvAccess):
            return self._check_env(request.name)
        if isinstance(request, FsReadAccess):
            return self._check_fs(request)
        return Decision(False, f"unknown capability request {type(request).__name__}")

    def _check_http(self, url: str) -> Decision:
        target = parse_url_target(url)
        for entry in self.deny.http or ():
            if http_pattern_matches(entry, target):
                return Decision(False, f"blocked by the admin policy: [deny] http entry '{entry}'")
        if self.allow.http is not None and not any(http_pattern_matches(e, target) for e in self.allow.http):
            return Decision(False, "outside the admin policy's [allow] http list")
        pattern = next((p for p in self.http if http_pattern_matches(p, target)), None)
        if pattern is None:
            return self._missing("http", lambda v: http_pattern_matches(parse_http_pattern(v), target),
                                 "no capabilities.http entry matches this scheme, host and port")
        return Decision(True, f"matches granted http entry '{pattern}'", str(pattern))

    def _check_env(self, name: str) -> Decision:
        for entry in self.deny.env or ():
            if entry.matches(name):
                return Decision(False, f"blocked by the admin policy: [deny] env entry '{entry}'")
        if self.allow.env is not None and not any(e.matches(name) for e in self.allow.env):
            return Decision(False, "outside the admin policy's [allow] env list")
        pattern = next((p for p in self.env if p.matches(name)), None)
        if pattern is None:
            return self._missing("env", lambda v: parse_env_pattern(v).matches(name),
                                 "no capabilities.env entry names this variable")
        return Decision(True, f"matches granted env entry '{pattern}'", str(pattern))

    def _check_fs(self, request: FsReadAccess) -> Decision:
        path, home, resolve = request.path, request.home, request.resolve

        def admits(patterns: Iterable[FsPattern]) -> FsPattern | None:
            return next((p for p in patterns
                         if fs_allows([canonical_pattern(p.expanded(home), resolve)], path)), None)

        refusal = sensitive_path_refusal(path, [canonical_pattern(p.expanded(home), resolve)
                                                for p in self.admin_fs_read])
        if refusal is not None:
            return Decision(False, refusal)
        for entry in self.deny.fs_read or ():
            if admits([entry]):
                return Decision(False, f"blocked by the admin policy: [deny] fs_read entry '{entry.text}'")
        if self.allow.fs_read is not None and admits(self.allow.fs_read) is None:
            return Decision(False, "outside the admin policy's [allow] fs_read list")
        pattern = admits(self.fs_read)
        if pattern is None:
            return self._missing("fs_read", lambda v: admits([FsPattern(v)]) is not None,
                                 "no capabilities.fs_read entry covers this path")
        if is_private(path, request.private) and path != request.own_credentials:
            return Decision(False, "tark's own files (credentials, storage, configuration) are never readable by "
                                   "plugins")
        return Decision(True, f"matches granted fs_read entry '{pattern.text}'", pattern.text)


def canonical_pattern(expanded: str, resolve: Callable[[str], str]) -> str:
    """Canonicalise the literal directory part of a pattern; glob components are kept as written."""
    star = expanded.find("*")
    if star < 0:
        return resolve(expanded)
    cut = expanded.rfind("/", 0, star)
    literal, rest = expanded[:cut], expanded[cut:]
    return (resolve(literal) if literal else "").rstrip("/") + rest


PROJECT_PLUGINS = "/.tark/plugins/"  # any project's per-plugin credentials and data (docs/channels.md)


def is_private(canonical_path: str, private: Iterable[str]) -> bool:
    if PROJECT_PLUGINS in canonical_path.rstrip("/") + "/":
        return True
    return any(canonical_path == p or canonical_path.startswith(p.rstrip("/") + "/") for p in private)


def sensitive_path_refusal(canonical_path: str, admin_patterns: Iterable[str]) -> str | None:
    """Why a path under /proc, /sys or /dev may not be read, or None. Only an admin [allow] fs_read entry that
    itself lies under that root and admits the path opens it (a manifest or a broad admin entry never does)."""
    root = next((r for r in SENSITIVE_ROOTS if canonical_path == r or canonical_path.startswith(r + "/")), None)
    if root is None:
        return None
    for pattern in admin_patterns:
        if (pattern == root or pattern.startswith(root + "/")) and fs_allows([pattern], canonical_path):
            return None
    return (f"{root} is never readable by plugins (it exposes the supervisor's own process, environment and "
            f"devices) unless the admin policy's [allow] fs_read names the path")


def resolve_grants(name: str, caps: Capabilities, approval: Approval | None, policy: AdminPolicy, *,
                   home: str) -> EffectiveGrants:
    """The effective grants of one plugin; every declared item gets a status and a reason."""
    statuses: list[ItemStatus] = []
    for item in declared_items(caps):
        kind, value = parse_item(item)
        admin, admin_note = _admin_verdict(kind, value, policy, home)
        approved, note = _approval_note(name, item, approval, policy, _admin_approves(kind, value, policy, home))
        statuses.append(ItemStatus(item=item, kind=kind, approved=approved, approval_note=note, admin=admin,
                                   admin_note=admin_note, effective=approved and admin in ("allowed", "narrowed")))
    granted = [s for s in statuses if s.effective]

    def values(kind: str) -> list[str]:
        return [s.item.partition(":")[2] for s in granted if s.kind == kind]

    return EffectiveGrants(
        plugin=name,
        items=tuple(statuses),
        storage=any(s.kind == "storage" for s in granted),
        shell=any(s.kind == "shell" for s in granted),
        http=tuple(parse_http_pattern(v) for v in values("http")),
        env=tuple(parse_env_pattern(v) for v in values("env")),
        fs_read=tuple(FsPattern(v) for v in values("fs_read")),
        deny=policy.deny,
        allow=policy.allow,
        admin_fs_read=policy.allow.fs_read or (),
    )


def refused_grants(name: str, caps: Capabilities, problem: str) -> EffectiveGrants:
    """Nothing granted, every declared item explained by `problem` (a broken admin policy fails closed)."""
    try:
        items = declared_items(caps)
    except PatternError:
        items = ()
    statuses = tuple(ItemStatus(item=i, kind=i.partition(":")[0], approved=False, approval_note=problem,
                                admin="policy-error", admin_note=problem, effective=False) for i in items)
    return EffectiveGrants(plugin=name, items=statuses, storage=False, shell=False, http=(), env=(), fs_read=(),
                           problem=problem)


def declared_only(name: str, caps: Capabilities, *, home: str = "/") -> EffectiveGrants:
    """Grants as if every declared item were approved and there were no admin policy (tests, benchmarks, and
    checks that only ask what a manifest declares)."""
    items = frozenset(declared_items(caps))
    return resolve_grants(name, caps, Approval("", "", items), AdminPolicy(), home=home)


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



def credentials_path_refusal(path: str, *, plugin: str, config_dir: str, data_root: str, home: str,
                             others: Mapping[str, str], admin_allowed: Iterable[FsPattern]) -> str | None:
    """Why `[oauth] credentials_path` (expanded, absolute, normalised) may not be used by `plugin`, or None.

    A plugin's own credentials location is tark's default file `<config>/<id>_oauth.json` and the directory
    `<config>/<id>/`. Anything else needs an admin `[allow] credentials_path` entry, and never names tark's data,
    another plugin's default location, or the file another installed plugin's manifest names."""
    config = config_dir.rstrip("/")
    own_default, own_dir = f"{config}/{plugin}_oauth.json", f"{config}/{plugin}"

    def under(root: str) -> bool:
        return path == root or path.startswith(root.rstrip("/") + "/")

    if under(data_root):
        return f"it is inside tark's data directory {data_root}"
    if path == own_default or under(own_dir):
        return None
    if under(config):
        rest = path[len(config) + 1:]
        first = rest.split("/", 1)[0]
        other = first[: -len("_oauth.json")] if "/" not in rest and first.endswith("_oauth.json") else first
        return (f"it is tark's credentials location for plugin '{other}', not this plugin's "
                f"(use {own_default} or a file under {own_dir}/)")
    for other, other_path in others.items():
        if other != plugin and other_path == path:
            return f"plugin '{other}' names the same file in its manifest"
    if any(fs_allows([p.expanded(home)], path) for p in admin_allowed):
        return None
    return (f"it is outside the plugin's own credentials location ({own_default} or {own_dir}/); an administrator "
            "can allow other paths with [allow] credentials_path in the admin policy")
