"""{name}: a tark hook plugin written in Python (wit/tark.wit hook-world; docs/writing-plugins.md).

Every tool event is appended to the plugin's storage (key "events") and logged.
"""

from wit_world import exports
from wit_world.imports import log, storage


def _record(line: str) -> None:
    storage.set("events", (storage.get("events") or "") + line + "\n")
    log.info(line)


class HookPlugin(exports.HookPlugin):
    def on_tool_execute(self, tool_name: str, args: str) -> None:
        _record(f"on_tool_execute {{tool_name}} {{args}}")

    def on_tool_complete(self, tool_name: str, result: str) -> None:
        _record(f"on_tool_complete {{tool_name}} {{result}}")

    def on_error(self, error: str) -> None:
        _record(f"on_error {{error}}")
