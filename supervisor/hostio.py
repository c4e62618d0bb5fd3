"""A thread running an asyncio loop, where host calls that wait on the network run (docs/limits.md).

Blocking host work (http requests, websocket connect/send/recv/close) runs here as asyncio tasks, so whoever waits
for it can cancel it: `submit` returns a concurrent Future, and `Future.cancel()` cancels the task, which closes
the request or leaves the websocket receive at once. Quick host calls (storage, env, fs, log) never come here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


class IoLoop:
    """One event loop thread, started on first use; `close` runs the given clean-ups on it and stops it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, coroutine: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())  # type: ignore[arg-type]

    def run(self, coroutine: Awaitable[T]) -> T:
        """Run to completion and return the result (the synchronous form, for callers that cannot cancel)."""
        return self.submit(coroutine).result()

    def close(self, *cleanups: Callable[[], Awaitable[Any]]) -> None:
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def finish() -> None:
            for cleanup in cleanups:
                try:
                    await asyncio.wait_for(cleanup(), 5)
                except Exception:  # noqa: BLE001 - close the rest anyway
                    pass
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(finish(), loop).result(10)
        except Exception:  # noqa: BLE001
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
            return self._loop
