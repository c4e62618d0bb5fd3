"""The README demo: install the bundled example plugins into a temporary data dir and run them through the supervisor.

    ./ops/scripts/demo.sh            (builds .venv and the examples first, then runs this)
    .venv/bin/python ops/demo.py [--keep]

Every step is a real `tark` command in a subprocess, printed before its output, so what you see is what a user
types. Nothing outside the temporary directory is touched; `--keep` leaves it for a look afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TARK = [str(Path(sys.executable).parent / "tark")]
sys.path.insert(0, str(ROOT / "tests"))  # the local OAuth and OpenAI-compatible servers the tests use

from oauth_server import OAuthServer, free_port  # noqa: E402
from model_server import ModelServer  # noqa: E402


class DemoFailed(Exception):
    pass


class Demo:
    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env = env
        self.home = home
        self.failures: list[str] = []

    def say(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def section(self, title: str) -> None:
        styled = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(f"\n\033[1m## {title}\033[0m" if styled else f"\n## {title}", flush=True)

    def run(self, *args: str, expect_ok: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        print(f"$ tark {' '.join(shlex.quote(a) for a in args)}", flush=True)
        done = subprocess.run([*TARK, *args], env={**self.env, **(env or {})}, text=True, capture_output=True,
                              input=stdin, timeout=120, check=False)
        for stream in (done.stdout, done.stderr):
            if stream.strip():
                print("  " + stream.rstrip().replace("\n", "\n  "), flush=True)
        if (done.returncode == 0) != expect_ok:
            self.failures.append(f"tark {' '.join(args)} exited {done.returncode}")
        return done


def plugins_and_basics(demo: Demo) -> None:
    demo.section("Install every bundled example plugin (local directories)")
    for directory in sorted(p.parent for p in EXAMPLES.glob("*/plugin.toml")):
        if (directory / "app.py").exists() and not any(directory.glob("*.wasm")):
            demo.say(f"{directory.name} is written in Python: build it with `tark plugin build {directory}`"
                     " (docs/writing-plugins.md); skipped here")
            continue
        demo.run("plugin", "add", "--yes", str(directory))
    demo.section("List and inspect them")
    demo.run("plugin", "list")
    demo.run("plugin", "info", "echo-provider")


def consent(demo: Demo) -> None:
    demo.section("Consent: a plugin gets what it declares AND you approved AND the admin policy allows")
    copy = demo.home / "asker"
    shutil.copytree(EXAMPLES / "hello-auth", copy)
    manifest = copy / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('name = "hello-auth"', 'name = "hello-asker"'))
    demo.say("with no terminal to ask on and no --yes, add lists what the plugin asks for and installs nothing")
    demo.run("plugin", "add", str(copy), expect_ok=False)
    demo.say("what echo-provider may do, item by item (it was installed with --yes above)")
    demo.run("plugin", "permissions", "echo-provider")
    demo.run("plugin", "revoke", "echo-provider", "env:ECHO_PREFIX")
    demo.run("plugin", "approve", "echo-provider", "env:ECHO_PREFIX")
    policy = demo.home / "policy.toml"
    policy.write_text('[deny]\nenv = ["ECHO_PREFIX"]\n')
    policy.chmod(0o600)
    demo.say("an admin policy (/etc/tark/policy.toml; here the file TARK_POLICY names) beats any approval")
    demo.run("plugin", "permissions", "echo-provider", env={"TARK_POLICY": str(policy)})


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


def provider_chat(demo: Demo) -> None:
    demo.section("Provider: tark chat over the plugin's provider_chat export (one-shot, then a REPL on stdin)")
    demo.run("chat", "--provider", "echo", "hello from tark chat")
    demo.run("chat", "--provider", "echo", stdin="first message\nsecond message\n/exit\n")


def auth_only_provider(demo: Demo) -> None:
    demo.section("Auth-only provider: the plugin hands over credentials, tark talks to the model API itself")
    with ModelServer() as server:
        copy = demo.home / "hello-auth"
        shutil.copytree(EXAMPLES / "hello-auth", copy)
        manifest = copy / "plugin.toml"
        local = f"http://127.0.0.1:{server.port}"
        manifest.write_text(manifest.read_text().replace('http = ["api.example.com"]',
                                                         f'http = ["api.example.com", "{local}"]'))
        demo.say(f"a local OpenAI-compatible server listens on {local}; the plugin's manifest must allow it")
        demo.run("plugin", "add", "--yes", "--force", str(copy))
        demo.run("chat", "--provider", "hello", "--json", "hi there",
                 env={"HELLO_TOKEN": "demo-token", "HELLO_ENDPOINT": f"{local}/v1/chat/completions"})
        if server.requests:
            headers = server.requests[-1].headers
            demo.say(f"the server saw Authorization: {headers.get('authorization')!r}, "
                     f"X-Hello: {headers.get('x-hello')!r}")


def oauth_sign_in(demo: Demo) -> None:
    demo.section("OAuth: tark auth with the PKCE flow against a local authorization server")
    with OAuthServer() as server:
        env = {**demo.env, "TARK_EXAMPLE_OAUTH": server.url, "TARK_EXAMPLE_OAUTH_PORT": str(free_port())}
        demo.say("the demo plays the browser: it opens the printed URL, the server approves at once")
        print("$ tark auth oauth-demo --no-browser", flush=True)
        process = subprocess.Popen([*TARK, "auth", "oauth-demo", "--no-browser"], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            print("  " + line.rstrip(), flush=True)
            match = re.match(r"\s*(http://127\.0\.0\.1:\d+/authorize\?\S+)", line)
            if match:
                httpx.get(match.group(1), follow_redirects=True, timeout=30)
        if process.wait(timeout=60) != 0:
            demo.failures.append("tark auth oauth-demo failed")
        demo.run("chat", "--provider", "oauth-demo", "who am I?", env=env)
        demo.section("Auth plugin (type auth, tark's legacy exports): the device flow, then the plugin holds the token")
        demo.run("auth", "device-auth", env=env)
        demo.run("plugin", "call", "device-auth", "get_token", env=env)
        demo.run("auth", "status", env=env)
        demo.run("auth", "logout", "oauth-demo", env=env)
        demo.run("auth", "logout", "device-auth", env=env)


def channels(demo: Demo) -> None:
    demo.section("Channel: the daemon serves webhooks and runs the poll loop")
    demo.run("supervisor", "start", "--webhook-port", "0")
    try:
        demo.run("channel", "start", "echo-channel")
        status = json.loads(demo.run("channel", "status", "echo-channel", "--json").stdout or "{}")
        url = status.get("webhook_url") or (status.get("channels") or [{}])[0].get("webhook_url")
        if url:
            print(f"$ curl -X POST {url} -d 'hello over a webhook'", flush=True)
            answer = httpx.post(url, content=b"hello over a webhook", timeout=30)
            print(f"  HTTP {answer.status_code}: {answer.text}", flush=True)
            time.sleep(0.5)  # the poll loop picks the message up
        else:
            demo.failures.append("no webhook URL in tark channel status")
        demo.run("channel", "status", "echo-channel")
        demo.run("channel", "send", "echo-channel", "--conversation", "c1", "a reply from tark")
        demo.run("channel", "stop", "echo-channel")
    finally:
        demo.run("supervisor", "stop")


def tools_and_hooks(demo: Demo) -> None:
    demo.section("Tools and hooks: every enabled hook plugin hears each tool run")
    demo.run("tool", "list")
    demo.run("tool", "run", "word-tools", "word_count", "--args", '{"text":"one two three"}')
    demo.run("tool", "run", "word-tools", "store_note", "--args", '{"note":"buy milk"}', "--yes")
    demo.run("tool", "run", "word-tools", "store_note", "--args", '{"wrong":1}', expect_ok=False)
    demo.run("plugin", "call", "audit-hook", "audit_events")


SCENES: tuple[Callable[[Demo], None], ...] = (
    plugins_and_basics, consent, raw_calls, provider_chat, auth_only_provider, oauth_sign_in, channels, tools_and_hooks,
    daemon_mode,
)


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
    env.pop("TARK_POLICY", None)
    print(f"Demo data dir: {home}")
    demo = Demo(env, home)
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
