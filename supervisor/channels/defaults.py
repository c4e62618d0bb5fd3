"""Defaults the CLI shows in its help: kept apart so `tark channel`/`tark supervisor` need not import the
channel service to print them (docs/performance.md, "Thin client")."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765  # tark serve's default
DEFAULT_POLL_MS = 100
