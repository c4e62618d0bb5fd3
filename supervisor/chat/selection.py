"""Which plugin `tark chat --provider NAME` means (tark core ABI §3.1 "Selection", without tark's id hacks).

NAME is a plugin id or the id of a provider a plugin contributes (`[[contributes.providers]] id`). The plugin
must be an enabled provider plugin. There are no built-in providers in this runtime, so an unknown NAME lists
the plugin providers only.
"""

from __future__ import annotations

from typing import Iterable

from policy.manifest import PluginType
from supervisor.chat.types import ChatError
from supervisor.plugin import InstalledPlugin


def is_provider(plugin: InstalledPlugin) -> bool:
    return plugin.manifest.plugin.type == PluginType.PROVIDER.value


def plugin_providers(plugins: Iterable[InstalledPlugin]) -> list[str]:
    """The ids of the enabled provider plugins, sorted."""
    return sorted(p.name for p in plugins if is_provider(p) and p.enabled)


def providers_line(plugins: Iterable[InstalledPlugin]) -> str:
    names = plugin_providers(plugins)
    if not names:
        return "Plugin providers: none installed (add one with: tark plugin add <source>)"
    return "Plugin providers: " + ", ".join(names)


def select_provider(plugins: Iterable[InstalledPlugin], name: str) -> InstalledPlugin:
    plugins = list(plugins)
    by_id = [p for p in plugins if p.name == name]
    if by_id:
        return _usable(by_id[0], name)
    contributing = [p for p in plugins if is_provider(p) and any(c.id == name for c in p.manifest.contributes.providers)]
    enabled = [p for p in contributing if p.enabled]
    if len(enabled) > 1:
        raise ChatError(f"Provider '{name}' is contributed by several plugins ({', '.join(p.name for p in enabled)}); "
                        "pass the plugin id with --provider instead")
    if enabled:
        return enabled[0]
    if contributing:
        return _usable(contributing[0], name)
    raise ChatError(f"Unknown LLM provider: {name}. Supported: (no built-in providers)\n{providers_line(plugins)}")


def _usable(plugin: InstalledPlugin, name: str) -> InstalledPlugin:
    if not is_provider(plugin):
        raise ChatError(f"Plugin '{plugin.name}' is a {plugin.manifest.plugin.type} plugin, not a provider; "
                        "tark chat needs a plugin of type \"provider\"")
    if not plugin.enabled:
        via = "" if plugin.name == name else f" (it provides '{name}')"
        raise ChatError(f"Provider plugin '{plugin.name}'{via} is disabled; enable it with: "
                        f"tark plugin enable {plugin.name}")
    return plugin
