"""The `data:` payloads of a server-sent event stream, decoded the way tark decodes them, with a line cap.

tark (`SseDecoder`, src/llm/streaming) treats every `data:` line as one payload: lines end at `\\n`, are
trimmed, and anything that is not a `data:` line (blank separators, `event:`, `id:`, comments) is skipped. A
trailing line without a newline counts when the stream ends. Unlike tark, a line may not grow past `max_line_bytes`:
a server sending one endless line would otherwise grow the buffer until the response cap.
"""

from __future__ import annotations

DATA = b"data:"


class SseError(ValueError):
    """The stream is not one this decoder accepts (a line over the cap)."""


class SseDecoder:
    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._partial = bytearray()
        self.lines_seen = 0  # complete non-blank lines, data or not

    def push(self, chunk: bytes) -> list[str]:
        """The payloads completed by `chunk`; the unfinished last line waits for the next chunk."""
        if b"\n" not in chunk:  # the common case of a long line arriving in pieces: no re-scan of the buffer
            self._partial += chunk
            if len(self._partial) > self._max:
                raise SseError(f"an event stream line is longer than {self._max} bytes")
            return []
        first, *lines = chunk.split(b"\n")
        lines.insert(0, bytes(self._partial) + first)
        self._partial = bytearray(lines.pop())
        if len(self._partial) > self._max:
            raise SseError(f"an event stream line is longer than {self._max} bytes")
        return [p for p in map(self._payload, lines) if p is not None]

    def finish(self) -> list[str]:
        """The payload of a last line that had no newline."""
        rest, self._partial = bytes(self._partial), bytearray()
        payload = self._payload(rest)
        return [] if payload is None else [payload]

    def _payload(self, line: bytes) -> str | None:
        if len(line) > self._max:
            raise SseError(f"an event stream line is longer than {self._max} bytes")
        line = line.strip()
        if not line:
            return None
        self.lines_seen += 1
        if not line.startswith(DATA):
            return None
        # per line, so a multi-byte character split across two chunks is decoded whole
        return line[len(DATA):].decode("utf-8", errors="replace").strip()
