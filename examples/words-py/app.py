"""words-py: examples/word-tools written in Python against wit/tark.wit's tool-world (docs/writing-plugins.md).

    word_count {"text": s}   the number of words of s (read-only)
    store_note {"note": s}   keeps s in storage (write)
    read_note  {}            the stored note, or "" (read-only)
"""

import json
from typing import List

from wit_world import exports
from wit_world.exports.tool_plugin import RiskLevel, ToolDef, ToolResult
from wit_world.imports import storage


def _schema(**properties: str) -> str:
    return json.dumps({"type": "object", "properties": {k: {"type": v} for k, v in properties.items()},
                       "required": sorted(properties)})


TOOLS = {
    "word_count": (ToolDef("word_count", "Count the words of a text", _schema(text="string")), RiskLevel.READ_ONLY),
    "store_note": (ToolDef("store_note", "Keep a note", _schema(note="string")), RiskLevel.WRITE),
    "read_note": (ToolDef("read_note", "Read the kept note", _schema()), RiskLevel.READ_ONLY),
}


def _fail(message: str) -> ToolResult:
    return ToolResult(success=False, output="", error=message)


class ToolPlugin(exports.ToolPlugin):
    def get_tools(self) -> List[ToolDef]:
        return [tool for tool, _ in TOOLS.values()]

    def get_risk_level(self, tool_name: str) -> RiskLevel:
        return TOOLS[tool_name][1] if tool_name in TOOLS else RiskLevel.DANGEROUS

    def execute(self, tool_name: str, arguments: str) -> ToolResult:
        try:
            args = json.loads(arguments or "{}")
        except ValueError as exc:
            return _fail(f"arguments are not JSON: {exc}")
        if tool_name == "word_count":
            return ToolResult(success=True, output=str(len(str(args.get("text", "")).split())), error=None)
        if tool_name == "store_note":
            storage.set("note", str(args.get("note", "")))
            return ToolResult(success=True, output="stored", error=None)
        if tool_name == "read_note":
            return ToolResult(success=True, output=storage.get("note") or "", error=None)
        return _fail(f"unknown tool: {tool_name}")
