"""{name}: a tark tool plugin written in Python (wit/tark.wit tool-world; docs/writing-plugins.md).

`tark plugin build` turns this file into {wasm} with componentize-py; `tark tool run {name} word_count
'{{"text": "a b c"}}'` calls it once installed.
"""

import json
from typing import List

from wit_world import exports
from wit_world.exports.tool_plugin import RiskLevel, ToolDef, ToolResult
from wit_world.imports import log

_SCHEMA = {{"type": "object", "properties": {{"text": {{"type": "string"}}}}, "required": ["text"]}}


class ToolPlugin(exports.ToolPlugin):
    def get_tools(self) -> List[ToolDef]:
        return [ToolDef(name="word_count", description="Count the words of a text",
                        parameters_schema=json.dumps(_SCHEMA))]

    def get_risk_level(self, tool_name: str) -> RiskLevel:
        return RiskLevel.READ_ONLY

    def execute(self, tool_name: str, arguments: str) -> ToolResult:
        if tool_name != "word_count":
            return ToolResult(success=False, output="", error=f"unknown tool: {{tool_name}}")
        try:
            text = json.loads(arguments)["text"]
        except (ValueError, KeyError, TypeError) as exc:
            return ToolResult(success=False, output="", error=f"bad arguments: {{exc}}")
        log.debug(f"word_count of {{len(text)}} characters")
        return ToolResult(success=True, output=str(len(str(text).split())), error=None)
