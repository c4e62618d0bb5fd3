"""Which plugin a name given to `tark auth` means: a contributed provider id, or a plugin id."""

from __future__ import annotations

import attrs

from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry

AUTH_PLUGIN_TYPES = ("provider", "auth")


class UnknownProvider(Exception):
    """A name no installed provider or auth plugin answers to."""


@attrs.frozen
class AuthTarget:
    plugin: InstalledPlugin
    provider_id: str  # the contributed provider id (or the plugin id when it contributes none)
    display_name: str


def targets_of(plugin: InstalledPlugin) -> list[AuthTarget]:
    providers = plugin.manifest.contributes.providers
    if not providers:
        return [AuthTarget(plugin, plugin.name, plugin.name)]
    return [AuthTarget(plugin, p.id, p.name or p.id) for p in providers]


def oauth_targets(registry: Registry) -> list[AuthTarget]:
    """Every contributed provider of an enabled plugin with an [oauth] section (what `tark auth` lists)."""
    return [target for plugin in registry.list().plugins if plugin.enabled and plugin.manifest.oauth is not None
            for target in targets_of(plugin)]


def auth_plugins(registry: Registry) -> list[InstalledPlugin]:
    """Every enabled provider or auth plugin (what `tark auth status` reports on)."""
    return [p for p in registry.list().plugins if p.enabled and p.manifest.plugin.type in AUTH_PLUGIN_TYPES]


def _unknown(name: str) -> UnknownProvider:
    return UnknownProvider(f"Unknown provider: {name}. Try 'tark auth' for a list of providers.")


def find_target(registry: Registry, name: str, *, need_oauth: bool) -> AuthTarget:
    """Contributed provider ids first (tark's rule), then plugin ids. Disabled plugins are refused by name."""
    plugins = registry.list().plugins
    for plugin in plugins:
        if need_oauth and plugin.manifest.oauth is None:
            continue
        for target in targets_of(plugin):
            if target.provider_id == name and (plugin.enabled or not need_oauth):
                return target
    for plugin in plugins:
        if plugin.name != name:
            continue
        if plugin.manifest.plugin.type not in AUTH_PLUGIN_TYPES and plugin.manifest.oauth is None:
            raise UnknownProvider(f"Plugin '{name}' is a {plugin.manifest.plugin.type} plugin, not a provider")
        if need_oauth and not plugin.enabled:
            raise UnknownProvider(f"Plugin '{name}' is disabled; enable it with: tark plugin enable {name}")
        if need_oauth and plugin.manifest.oauth is None:
            raise UnknownProvider(f"Plugin '{name}' has no OAuth configuration")
        found = targets_of(plugin)
        return AuthTarget(plugin, name, found[0].display_name if len(found) == 1 else name)
    raise _unknown(name)
