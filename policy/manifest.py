"""The plugin manifest (`plugin.toml`): model, parsing and validation. Pure: takes text, returns values.

Field set and defaults follow tark (shared/reference/tark-core-abi.md §4); validation follows the plugin guide
and adds what tark misses (wildcard-only patterns, malformed hosts, escaping wasm paths, absurd sizes,
min_tark_version and api_version checks). Unknown keys are ignored, each with a warning naming it.
"""

from __future__ import annotations

import enum
import re
import tomllib
from pathlib import PurePosixPath
from typing import Any, Mapping

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from policy.errors import ManifestError, ManifestParseError, PatternError
from policy.patterns import (
    EnvPattern,
    FsPattern,
    HttpPattern,
    parse_env_pattern,
    parse_fs_pattern,
    parse_http_pattern,
)
from policy.version import COMPATIBLE_TARK_VERSION, SUPPORTED_API_VERSIONS, parse_semver

MAX_MANIFEST_BYTES = 64 * 1024
MAX_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 4096
MAX_LIST_ENTRIES = 64
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


class PluginType(str, enum.Enum):
    AUTH = "auth"
    TOOL = "tool"
    PROVIDER = "provider"
    CHANNEL = "channel"
    HOOK = "hook"


@attrs.frozen
class PluginInfo:
    name: str = ""
    version: str = ""
    type: str = ""
    description: str = ""
    author: str = ""
    homepage: str = ""
    license: str = ""
    min_tark_version: str | None = None
    api_version: str = "0.1"
    wasm: str = "plugin.wasm"

    @property
    def plugin_type(self) -> PluginType:
        return PluginType(self.type)


@attrs.frozen
class Capabilities:
    storage: bool = False
    http: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    fs_read: tuple[str, ...] = ()
    shell: bool = False
    filesystem: tuple[str, ...] = ()  # declared by tark's docs, inert there and here

    @property
    def http_patterns(self) -> tuple[HttpPattern, ...]:
        return tuple(parse_http_pattern(p) for p in self.http)

    @property
    def env_patterns(self) -> tuple[EnvPattern, ...]:
        return tuple(parse_env_pattern(p) for p in self.env)

    @property
    def fs_read_patterns(self) -> tuple[FsPattern, ...]:
        return tuple(parse_fs_pattern(p) for p in self.fs_read)


@attrs.frozen
class ProviderContribution:
    id: str
    name: str
    description: str = ""
    base_provider: str | None = None


@attrs.frozen
class ChannelContribution:
    id: str
    name: str
    description: str = ""


@attrs.frozen
class CommandContribution:
    id: str
    title: str
    category: str = ""


@attrs.frozen
class ConfigurationContribution:
    key: str
    type: str = "string"
    default: Any = None
    description: str = ""


@attrs.frozen
class Contributes:
    providers: tuple[ProviderContribution, ...] = ()
    channels: tuple[ChannelContribution, ...] = ()
    commands: tuple[CommandContribution, ...] = ()
    configuration: tuple[ConfigurationContribution, ...] = ()


@attrs.frozen
class Activation:
    events: tuple[str, ...] = ()


@attrs.frozen
class OAuthConfig:
    flow: str
    auth_url: str
    token_url: str
    client_id: str
    scopes: tuple[str, ...]
    redirect_uri: str
    client_secret: str | None = None
    credentials_path: str | None = None
    process_tokens_callback: str | None = None
    device_authorization_url: str | None = None
    extra_params: Mapping[str, str] = attrs.field(factory=dict)
    use_state: bool = True

    def expanded(self, environ: Mapping[str, str]) -> "OAuthConfig":
        """A copy with `${NAME}` replaced from `environ`; unset names stay literal (tark's rule).

        Expansion happens only here, at use time, so secrets never sit in the parsed manifest.
        """

        def sub(value: str | None) -> str | None:
            if value is None:
                return None
            return _PLACEHOLDER.sub(lambda m: environ.get(m.group(1), m.group(0)), value)

        return attrs.evolve(
            self,
            auth_url=sub(self.auth_url),
            token_url=sub(self.token_url),
            client_id=sub(self.client_id),
            scopes=tuple(sub(s) for s in self.scopes),
            redirect_uri=sub(self.redirect_uri),
            client_secret=sub(self.client_secret),
            credentials_path=sub(self.credentials_path),
            process_tokens_callback=sub(self.process_tokens_callback),
            device_authorization_url=sub(self.device_authorization_url),
            extra_params={k: sub(v) for k, v in self.extra_params.items()},
        )

    def unresolved_fields(self) -> list[str]:
        """Names of fields that still hold a `${` placeholder (tark refuses to start a flow then)."""
        found = []
        for field in attrs.fields(OAuthConfig):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else value.values() if isinstance(value, Mapping) else [value]
            if any(isinstance(v, str) and "${" in v for v in values):
                found.append(field.name)
        return found


@attrs.frozen
class Manifest:
    plugin: PluginInfo
    capabilities: Capabilities = Capabilities()
    contributes: Contributes = Contributes()
    activation: Activation = Activation()
    config: Mapping[str, Any] = attrs.field(factory=dict)
    oauth: OAuthConfig | None = None

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def plugin_type(self) -> PluginType:
        return self.plugin.plugin_type


@attrs.frozen
class ParsedManifest:
    manifest: Manifest
    warnings: tuple[str, ...]


def _strict(kind: type, label: str):
    def structure(value: Any, _type: Any) -> Any:
        # bool is an int subclass in Python; TOML keeps them apart and so do we.
        if type(value) is not kind:
            raise TypeError(f"expected {label}, got {_toml_type(value)}")
        return value

    return structure


def _toml_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _ItemError(TypeError):
    """An error inside one array entry, carrying the entry's relative key (`[2].id`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _tuple_of(converter: cattrs.Converter):
    def structure(value: Any, type_: Any) -> tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {_toml_type(value)}")
        if len(value) > MAX_LIST_ENTRIES:
            raise TypeError(f"has {len(value)} entries; at most {MAX_LIST_ENTRIES} are allowed")
        (item_type,) = {a for a in type_.__args__ if a is not Ellipsis}
        items = []
        for index, item in enumerate(value):
            try:
                items.append(converter.structure(item, item_type))
            except Exception as exc:  # noqa: BLE001 - re-raised with its position
                key, message = _first_error(exc, "")
                raise _ItemError(f"[{index}]{key}", message) from None
        return tuple(items)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(bool, _strict(bool, "a boolean (true or false)"))
    converter.register_structure_hook_func(lambda t: t is Any, lambda v, _t: v)

    def string_table(value: Any, _t: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise TypeError("expected a table of strings")
        return dict(value)

    def any_table(value: Any, _t: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected a table, got {_toml_type(value)}")
        return dict(value)

    converter.register_structure_hook_func(lambda t: t == Mapping[str, str], string_table)
    converter.register_structure_hook_func(lambda t: t == Mapping[str, Any], any_table)
    converter.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", None) is tuple, lambda _t: _tuple_of(converter)
    )
    return converter


_CONVERTER = _make_converter()
for _cls in (PluginInfo, Capabilities, ProviderContribution, ChannelContribution, CommandContribution,
             ConfigurationContribution, Contributes, Activation, OAuthConfig, Manifest, ParsedManifest):
    attrs.resolve_types(_cls)


def _unknown_keys(cls: type, data: Any, prefix: str) -> list[str]:
    if not isinstance(data, dict) or not attrs.has(cls):
        return []
    fields = {f.name: f for f in attrs.fields(cls)}
    found = [f"{prefix}{key}" for key in data if key not in fields]
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            continue
        inner = _attrs_class(field.type)
        if inner is None:
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            where = f"{prefix}{key}[{index}]." if isinstance(value, list) else f"{prefix}{key}."
            found.extend(_unknown_keys(inner, item, where))
    return found


def _attrs_class(type_: Any) -> type | None:
    if attrs.has(type_):
        return type_
    for arg in getattr(type_, "__args__", ()):
        if attrs.has(arg):
            return arg
    return None


def _first_error(exc: BaseException, path: str) -> tuple[str, str]:
    """The dotted key and message of the first leaf error inside a cattrs validation group."""
    if isinstance(exc, ExceptionGroup):
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if isinstance(n, str)), "")
            step = _note_to_key(sub, note)
            return _first_error(sub, path + step)
    if isinstance(exc, _ItemError):
        return path + exc.key, str(exc)
    if isinstance(exc, KeyError):
        return path, "is required but missing"
    return path, str(exc)


def _note_to_key(exc: BaseException, note: str) -> str:
    for note_obj in getattr(exc, "__notes__", []):
        name = getattr(note_obj, "name", None)
        index = getattr(note_obj, "index", None)
        if name is not None:
            return f".{name}"
        if index is not None:
            return f"[{index}]"
    match = re.search(r"attribute '([^']+)'|index (\d+)|key '([^']+)'", note)
    if match:
        attr, index, key = match.groups()
        return f".{attr}" if attr else f"[{index}]" if index else f".{key}"
    return ""


def parse_manifest(text: str | bytes, source: str = "plugin.toml") -> ParsedManifest:
    """Parse and validate a manifest. Raises ManifestError naming the file, key and fix."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, "", f"file is {len(text)} bytes; the limit is {MAX_MANIFEST_BYTES}",
                            "a manifest holds metadata only; move data elsewhere")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestParseError(source, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestParseError(source, str(exc)) from exc

    warnings = [f"{source}: unknown key '{key}' is ignored (check for a typo)"
                for key in _unknown_keys(Manifest, raw, "")]
    if "plugin" not in raw:
        raise ManifestError(source, "plugin", "the [plugin] table is missing",
                            'add [plugin] with name, version and type')
    plugin_raw = raw["plugin"]
    if isinstance(plugin_raw, dict):
        if not plugin_raw.get("name"):
            raise ManifestError(source, "plugin.name", "Plugin name is required", 'add name = "my-plugin"')
        if not plugin_raw.get("version"):
            raise ManifestError(source, "plugin.version", "Plugin version is required", 'add version = "0.1.0"')
        if not plugin_raw.get("type"):
            raise ManifestError(source, "plugin.type", "Plugin type is required",
                                "add type = one of " + ", ".join(t.value for t in PluginType))
    try:
        manifest = _CONVERTER.structure(raw, Manifest)
    except (ClassValidationError, ForbiddenExtraKeysError, TypeError, ValueError) as exc:
        key, message = _first_error(exc, "")
        raise ManifestError(source, key.lstrip("."), message, "see the manifest reference in docs/manifest.md") from None
    warnings.extend(_validate(manifest, source))
    return ParsedManifest(manifest=manifest, warnings=tuple(warnings))


def _validate(manifest: Manifest, source: str) -> list[str]:
    """Semantic checks, in tark's order first. Returns warnings; raises ManifestError."""
    info = manifest.plugin
    if parse_semver(info.version) is None:
        raise ManifestError(source, "plugin.version", f"Plugin version must be valid semver: {info.version}",
                            'use MAJOR.MINOR.PATCH such as "1.0.0" (not "1.0" or "v1.0.0")')
    if len(info.name) > MAX_NAME_LENGTH or not _NAME.match(info.name):
        suggestion = re.sub(r"[^a-z0-9]+", "-", info.name.lower()).strip("-")[:MAX_NAME_LENGTH] or "my-plugin"
        raise ManifestError(source, "plugin.name",
                            f"Plugin name must be lowercase letters, digits and single hyphens "
                            f"(at most {MAX_NAME_LENGTH} characters): '{info.name}'",
                            f'use name = "{suggestion}"')
    if info.type not in {t.value for t in PluginType}:
        raise ManifestError(source, "plugin.type", f"Plugin type must be one of "
                            f"{', '.join(t.value for t in PluginType)}: '{info.type}'",
                            "pick the type matching the exports the plugin implements")
    for key in ("description", "author", "homepage", "license"):
        if len(getattr(info, key)) > MAX_TEXT_LENGTH:
            raise ManifestError(source, f"plugin.{key}", f"is longer than {MAX_TEXT_LENGTH} characters",
                                "shorten it")
    if info.min_tark_version is not None:
        required = parse_semver(info.min_tark_version)
        if required is None:
            raise ManifestError(source, "plugin.min_tark_version",
                                f"min_tark_version must be valid semver: {info.min_tark_version}",
                                'use MAJOR.MINOR.PATCH such as "0.5.0"')
        if required > parse_semver(COMPATIBLE_TARK_VERSION):
            raise ManifestError(source, "plugin.min_tark_version",
                                f"Plugin requires tark >= {info.min_tark_version}, "
                                f"but current version is {COMPATIBLE_TARK_VERSION}",
                                "install a plugin release made for this tark version, or lower min_tark_version")
    if info.api_version not in SUPPORTED_API_VERSIONS:
        raise ManifestError(source, "plugin.api_version",
                            f"api_version '{info.api_version}' is not supported "
                            f"(supported: {', '.join(SUPPORTED_API_VERSIONS)})",
                            'use api_version = "0.1" or remove the key')
    _validate_wasm_path(info.wasm, source)

    caps = manifest.capabilities
    for key, parse in (("http", parse_http_pattern), ("env", parse_env_pattern), ("fs_read", parse_fs_pattern)):
        for index, entry in enumerate(getattr(caps, key)):
            try:
                parse(entry)
            except PatternError as exc:
                raise ManifestError(source, f"capabilities.{key}[{index}]", str(exc),
                                    _PATTERN_FIX[key]) from None
    warnings = []
    if caps.shell:
        warnings.append(f"{source}: capabilities.shell = true asks for shell access (dangerous); "
                        "it is granted only after explicit approval")
    if caps.filesystem:
        warnings.append(f"{source}: capabilities.filesystem has no effect; use fs_read")

    for index, provider in enumerate(manifest.contributes.providers):
        if not provider.id or len(provider.id) > MAX_NAME_LENGTH:
            raise ManifestError(source, f"contributes.providers[{index}].id",
                                "provider id must be 1 to 64 characters", 'set id = "my-provider"')
    if manifest.oauth is not None:
        _validate_oauth(manifest.oauth, source)
    return warnings


_PATTERN_FIX = {
    "http": 'list hosts like "api.example.com", "*.example.com" or "https://api.example.com:8443"',
    "env": 'list variable names like "API_KEY" or prefixes like "MYAPP_*"',
    "fs_read": 'list absolute paths like "~/.config/app/creds.json" or "/etc/app/*.conf"',
}


def _validate_wasm_path(wasm: str, source: str) -> None:
    fix = 'give a path inside the plugin directory, such as "plugin.wasm" or "dist/plugin.wasm"'
    if not wasm or "\x00" in wasm or "\\" in wasm:
        raise ManifestError(source, "plugin.wasm", f"invalid wasm path {wasm!r}", fix)
    path = PurePosixPath(wasm)
    if path.is_absolute() or wasm.startswith("~"):
        raise ManifestError(source, "plugin.wasm", f"wasm path must be relative to the plugin directory: {wasm}", fix)
    if ".." in path.parts:
        raise ManifestError(source, "plugin.wasm", f"wasm path escapes the plugin directory: {wasm}", fix)


def _validate_oauth(oauth: OAuthConfig, source: str) -> None:
    if oauth.flow not in ("pkce", "device_flow"):
        raise ManifestError(source, "oauth.flow", f"unknown OAuth flow '{oauth.flow}'",
                            'use flow = "pkce" or flow = "device_flow"')
    for key in ("auth_url", "token_url", "device_authorization_url"):
        value = getattr(oauth, key)
        if value is not None and not (value.startswith("https://") or value.startswith("http://")
                                      or value.startswith("${")):
            raise ManifestError(source, f"oauth.{key}", f"'{value}' is not an http(s) URL",
                                "give the full URL of the provider's endpoint")
    if not oauth.scopes and oauth.flow == "pkce":
        raise ManifestError(source, "oauth.scopes", "at least one scope is required for the PKCE flow",
                            'add scopes = ["openid"] or the scopes the provider needs')
