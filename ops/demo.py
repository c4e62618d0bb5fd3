"""The README demo: install the bundled example plugins into a temporary data dir and run them through the supervisor.

    ./ops/scripts/demo.sh            (builds .venv and the examples first, then runs this)
    .venv/bin/python ops/demo.py [--keep]

Every step is a real `tark` command in a subprocess, printed before its output, so what you see is what a user
types. Nothing outside the temporary directory is touched; `--keep` leaves it for a look afterwards.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TARK = [str(Path(sys.executable).parent / "tark")]


class DemoFailed(Exception):
    pass


class Demo:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.failures: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n\033[1m## {title}\033[0m" if sys.stdout.isatty() else f"\n## {title}", flush=True)

    def run(self, *args: str, expect_ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        print(f"$ tark {' '.join(shlex.quote(a) for a in args)}", flush=True)
        done = subprocess.run([*TARK, *args], env=self.env, text=True, capture_output=True, input=stdin,
                              timeout=120, check=False)
        for stream in (done.stdout, done.stderr):
            if stream.strip():
                print("  " + stream.rstrip().replace("\n", "\n  "), flush=True)
        if (done.returncode == 0) != expect_ok:
            self.failures.append(f"tark {' '.join(args)} exited {done.returncode}")
        return done


def plugins_and_basics(demo: Demo) -> None:
    demo.section("Install every bundled example plugin (local directories)")
    for directory in sorted(p.parent for p in EXAMPLES.glob("*/plugin.toml")):
        demo.run("plugin", "add", str(directory))
    demo.section("List and inspect them")
    demo.run("plugin", "list")
    demo.run("plugin", "info", "echo-provider")


def raw_calls(demo: Demo) -> None:
    demo.section("Call exports directly; each plugin runs in its own worker process")
    demo.run("plugin", "call", "echo-provider", "provider_info")
    demo.run("plugin", "call", "echo-provider", "provider_chat", '[{"role":"user","content":"hello, supervisor"}]',
             "echo-1", "--json")
    demo.run("plugin", "call", "echo-channel", "channel_info")
    demo.run("plugin", "call", "hello-auth", "display_name")
    demo.section("Bad calls fail with a clear error and the next call still works")
    demo.run("plugin", "call", "echo-provider", "no_such_export", expect_ok=False)
    demo.run("plugin", "call", "echo-provider", "provider_models")


def daemon_mode(demo: Demo) -> None:
    demo.section("Daemon mode: the same commands go through a long-running supervisor")
    demo.run("supervisor", "start", "--idle-timeout", "60")
    try:
        demo.run("plugin", "call", "echo-provider", "provider_chat", '[{"role":"user","content":"via the daemon"}]',
                 "echo-1")
        demo.run("plugin", "call", "echo-channel", "channel_info")
        demo.run("supervisor", "status")
    finally:
        demo.run("supervisor", "stop")


SCENES: tuple[Callable[[Demo], None], ...] = (plugins_and_basics, raw_calls, daemon_mode)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    options = parser.parse_args()
    if not any(EXAMPLES.glob("*/plugin.wasm")):
        print("examples are not built; run ./ops/scripts/demo.sh (or python examples/build.py)", file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="tark-demo-"))
    env = {
        **os.environ,
        "TARK_DATA_DIR": str(home / "data"),
        "TARK_CONFIG_DIR": str(home / "config"),
        "TARK_CACHE_DIR": str(home / "cache"),
        "TARK_RUNTIME_DIR": str(home / "run"),
        "TARK_NO_BROWSER": "1",
    }
    print(f"Demo data dir: {home}")
    demo = Demo(env)
    try:
        for scene in SCENES:
            scene(demo)
    finally:
        subprocess.run([*TARK, "supervisor", "stop"], env=env, capture_output=True, check=False)
        if options.keep:
            print(f"\nKept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    if demo.failures:
        print("\nDemo steps that did not behave as expected:\n  " + "\n  ".join(demo.failures), file=sys.stderr)
        return 1
    print("\nDemo finished: every step behaved as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
