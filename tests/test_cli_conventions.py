"""CLI conventions (cargo/gh/systemctl as the reference; docs/cli.md), checked on the real `tark`:

- `tark --version`; `tark completion bash|zsh|fish` scripts that load in their shell;
- `--json` on every command, and each prints exactly one JSON document (one line) on stdout, errors included
  (stdout empty, `Error: ...` on stderr, exit 1);
- no escape sequences when stdout is not a terminal or NO_COLOR is set (and styles on a terminal without it);
- exit codes 0 ok, 1 error, 2 usage, 130 interrupted;
- `--help` command summaries are never cut off;
- two concurrent `supervisor start`: exactly one daemon, the other start says it is already running.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import click
import pytest

from conftest import REPO_ROOT
from oauth_server import OAuthServer, free_port

EXAMPLES = REPO_ROOT / "examples"
ESC = "\x1b"


def all_commands() -> dict[str, click.Command]:
    from supervisor.cli.main import build_cli

    found: dict[str, click.Command] = {}
    root = build_cli()

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            with click.Context(command) as ctx:
                for name in command.list_commands(ctx):  # lazy groups: imports each command
                    sub = command.get_command(ctx, name)
                    assert sub is not None
                    walk(sub, (*path, name))
        else:
            found[" ".join(path)] = command

    walk(root, ())
    return found


# Commands whose output is not data: the completion script.
NOT_DATA = {"completion"}


def test_version_is_the_package_version(run_tark) -> None:
    done = run_tark("--version")
    assert (done.returncode, done.stdout) == (0, f"tark {importlib.metadata.version('tark-supervisor')}\n")


def test_every_command_has_the_one_json_flag() -> None:
    for path, command in all_commands().items():
        if path in NOT_DATA:
            continue
        flags = [p for p in command.params if isinstance(p, click.Option) and "--json" in p.opts]
        assert len(flags) == 1 and flags[0].is_flag, f"tark {path} has no --json flag"
        assert flags[0].name == "as_json"


def one_document(stdout: str) -> object:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {len(lines)}: {stdout[:500]!r}"
    return json.loads(lines[0])


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """The example plugins, copied (their wasm built by examples/build.py in test.sh)."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    device = target / "oauth-provider" / "plugin.toml"
    device.write_text(device.read_text().replace('flow = "pkce"', 'flow = "device_flow"'))
    return target


def test_json_everywhere_one_document_each(tark_argv: list[str], examples: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command, run for real with --json, prints one JSON document; together they cover every command."""
    covered: set[str] = set()

    def run(path: str, *args: str, stdin: str | None = None) -> object:
        done = subprocess.run([*tark_argv, *path.split(), *args, "--json"],
                              cwd=REPO_ROOT, capture_output=True, text=True, input=stdin, timeout=120,
                              env=dict(os.environ), check=False)
        assert done.returncode == 0, f"tark {path} {' '.join(args)}: {done.stderr}"
        covered.add(path)
        return one_document(done.stdout)

    with OAuthServer() as server:
        monkeypatch.setenv("TARK_EXAMPLE_OAUTH", server.url)
        monkeypatch.setenv("TARK_EXAMPLE_OAUTH_PORT", str(free_port()))
        for name in ("echo-provider", "word-tools", "echo-channel", "oauth-provider", "credentials-channel"):
            added = run("plugin add", "--yes", str(examples / name))
            assert added["id"] == name and added["enabled"] is True
        monkeypatch.setenv("TARK_PLUGIN_PASSPHRASE", "conventions")
        configured = run("plugin auth", "credentials-channel", "--scope", "global", "--set", "api_key=k",
                         "--no-oauth")
        assert configured["plugin"] == "credentials-channel" and configured["encrypted"] is True
        assert {p["id"] for p in run("plugin list")} >= {"echo-provider", "word-tools"}
        assert run("plugin info", "echo-provider")["id"] == "echo-provider"
        assert run("plugin disable", "word-tools") == {"id": "word-tools", "enabled": False}
        assert run("plugin enable", "word-tools") == {"id": "word-tools", "enabled": True}
        assert run("plugin update", "echo-provider")["updated"] == 1
        assert run("plugin permissions", "echo-provider")["plugin"] == "echo-provider"
        assert run("plugin revoke", "echo-provider", "env:ECHO_PREFIX")["revoked"] == ["env:ECHO_PREFIX"]
        assert run("plugin approve", "echo-provider", "env:ECHO_PREFIX")["approved"] == ["env:ECHO_PREFIX"]
        assert run("plugin secret set", "echo-provider", "ECHO_PREFIX", stdin="x")["set"] is True
        assert run("plugin secret list", "echo-provider")["keys"] == ["ECHO_PREFIX"]
        assert run("plugin secret unset", "echo-provider", "ECHO_PREFIX")["set"] is False
        assert isinstance(run("plugin audit", "echo-provider"), list)
        assert "ret" in run("plugin call", "echo-provider", "provider_info")
        assert run("chat", "--provider", "echo", "hi")["text"]
        assert any(t["name"] == "word_count" for t in run("tool list"))
        assert run("tool run", "word-tools", "word_count", "--args", '{"text":"a b c"}')["success"] is True
        assert run("auth login", "oauth-demo", "--min-poll-interval", "0")["provider"] == "oauth-demo"
        assert isinstance(run("auth status"), list)
        assert run("auth logout", "oauth-demo")["deleted"]
    started = run("supervisor start", "--webhook-port", "0")
    try:
        assert started["pid"] > 0 and started["log"]["filter"] == "info"
        assert run("supervisor status")["log"]["path"] == started["log"]["path"]
        assert run("channel start", "echo-channel")["channels"][0]["name"] == "echo-channel"
        assert run("channel status")["daemon"] is True
        assert run("channel send", "echo-channel", "hello", "--conversation", "c1")["message_ids"]
        assert run("plugin status", "echo-channel")["running"] is True
        assert run("channel stop", "echo-channel")
    finally:
        stopped = run("supervisor stop")
    assert stopped["stopped"] is True and stopped["pid"] == started["pid"]
    assert run("plugin remove", "word-tools") == {"id": "word-tools", "removed": True}
    made = run("plugin new", str(examples / "fresh"), "--type", "tool", "--lang", "wat")
    assert made["directory"] == str(examples / "fresh") and "plugin.toml" in made["files"]
    assert run("plugin build", made["directory"])["wasm"].endswith(".wasm")
    assert covered == set(all_commands()) - NOT_DATA


def test_errors_with_json_leave_stdout_empty(run_tark) -> None:
    done = run_tark("plugin", "info", "nope", "--json")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("Error: ") and "nope" in done.stderr


def test_tool_run_json_is_one_document_even_when_the_tool_fails(run_tark, examples: Path) -> None:
    """A tool that ran and failed is a result (one document, exit 1); arguments refused before the run are an
    error (nothing on stdout)."""
    assert run_tark("plugin", "add", "--yes", str(examples / "word-tools")).returncode == 0
    done = run_tark("tool", "run", "word-tools", "read_note", "--json")
    assert done.returncode == 1 and done.stderr.startswith("Error: ")
    assert one_document(done.stdout)["error"] == "no note has been stored yet"
    refused = run_tark("tool", "run", "word-tools", "word_count", "--args", '{"wrong":1}', "--json")
    assert (refused.returncode, refused.stdout) == (1, "") and refused.stderr.startswith("Error: ")


# ---------------------------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize("args", [
    ("no-such-command",),
    ("plugin", "add"),  # missing argument
    ("plugin", "list", "--no-such-option"),
    ("plugin", "update"),  # neither ID nor --all
    ("completion", "tcsh"),
    ("channel", "send", "x", "hi", "--conversation", "c", "--metadata", "{bad"),
])
def test_usage_errors_exit_2(run_tark, args: tuple[str, ...]) -> None:
    done = run_tark(*args)
    assert done.returncode == 2, done.stderr
    assert "Error:" in done.stderr and done.stdout == ""


def test_bad_metadata_is_named(run_tark) -> None:
    done = run_tark("channel", "send", "x", "hi", "--conversation", "c", "--metadata", "{bad")
    assert "Invalid value for '--metadata': not valid JSON" in done.stderr


def test_user_errors_exit_1(run_tark) -> None:
    done = run_tark("plugin", "enable", "nope")
    assert done.returncode == 1 and done.stderr.startswith("Error: ")


def run_on_pty(argv: list[str], env: dict[str, str], *, send: bytes = b"", interrupt_after: str | None = None,
               timeout: float = 60) -> tuple[int, str]:
    """Run argv with stdin/stdout/stderr on a pseudo-terminal; returns (exit code, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(REPO_ROOT)
        os.execve(argv[0], argv, env)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        if send:
            os.write(fd, send)
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
                if interrupt_after is not None and interrupt_after.encode() in output:
                    os.kill(pid, signal.SIGINT)
                    interrupt_after = None
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")


@pytest.fixture
def tark_path(tark_argv: list[str]) -> str:
    if len(tark_argv) != 1:
        pytest.skip("needs the installed tark script")
    return tark_argv[0]


def test_ctrl_c_at_a_prompt_exits_130(tark_path: str, examples: Path, run_tark) -> None:
    assert run_tark("plugin", "add", "--yes", str(examples / "echo-provider")).returncode == 0
    code, output = run_on_pty([tark_path, "plugin", "secret", "set", "echo-provider", "ECHO_PREFIX"],
                              dict(os.environ), interrupt_after="Value of ECHO_PREFIX")
    assert code == 130, output
    assert "Interrupted." in output and "Traceback" not in output and "Aborted" not in output


# ---------------------------------------------------------------------------------------------- styles


def test_no_escapes_when_stdout_is_not_a_terminal(run_tark, examples: Path) -> None:
    assert run_tark("plugin", "add", "--yes", str(examples / "echo-provider")).returncode == 0
    for args in (("plugin", "list"), ("plugin", "info", "echo-provider"), ("auth", "status"),
                 ("plugin", "permissions", "echo-provider"), ("supervisor", "status"), ("--help",)):
        done = run_tark(*args)
        assert done.returncode == 0, done.stderr
        assert ESC not in done.stdout + done.stderr, args


def test_no_escapes_on_a_terminal_with_no_color(tark_path: str, examples: Path, run_tark) -> None:
    assert run_tark("plugin", "add", "--yes", str(examples / "echo-provider")).returncode == 0
    env = {**os.environ, "TERM": "xterm-256color"}
    for args in (["plugin", "list"], ["auth", "status"], ["plugin", "info", "echo-provider"]):
        styled_code, styled = run_on_pty([tark_path, *args], env)
        plain_code, plain = run_on_pty([tark_path, *args], {**env, "NO_COLOR": "1"})
        assert styled_code == plain_code == 0
        assert ESC in styled, f"the check can fail: tark {' '.join(args)} styles its headers on a terminal"
        assert ESC not in plain, f"tark {' '.join(args)} with NO_COLOR: {plain[:300]!r}"


def test_clone_progress_on_a_terminal_only(tark_path: str, make_plugin_dir, make_git_repo, tmp_path: Path,
                                           run_tark) -> None:
    source = make_plugin_dir(tmp_path / "repo", name="cloned", files={f"pad/{i}.txt": os.urandom(2048).hex()
                                                                      for i in range(200)})
    repo = make_git_repo(source)
    code, output = run_on_pty([tark_path, "plugin", "add", "--yes", repo.url], {**os.environ, "TERM": "xterm"})
    assert code == 0, output
    assert "Receiving objects" in output  # git's own progress, shown live
    piped = run_tark("plugin", "add", "--yes", "--force", repo.url)
    assert piped.returncode == 0, piped.stderr
    assert "Receiving objects" not in piped.stdout + piped.stderr and ESC not in piped.stdout + piped.stderr


def test_compile_status_on_a_terminal_only_and_only_when_compiling(tark_path: str, examples: Path, run_tark) -> None:
    assert run_tark("plugin", "add", "--yes", str(examples / "echo-provider")).returncode == 0
    call = [tark_path, "plugin", "call", "echo-provider", "provider_info"]
    code, first = run_on_pty(call, {**os.environ, "TERM": "xterm"})
    assert code == 0 and "Compiling echo-provider (" in first, first
    code, cached = run_on_pty(call, {**os.environ, "TERM": "xterm"})
    assert code == 0 and "Compiling" not in cached  # the module cache: compiled once
    shutil.rmtree(Path(os.environ["TARK_CACHE_DIR"]))
    piped = run_tark("plugin", "call", "echo-provider", "provider_info")
    assert piped.returncode == 0 and "Compiling" not in piped.stdout + piped.stderr


# ---------------------------------------------------------------------------------------------- completion, help


def test_completion_scripts_load_and_complete(tark_path: str) -> None:
    bin_dir = str(Path(tark_path).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    loaded = subprocess.run(["bash", "-c", "source <(tark completion bash) && complete -p tark"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert loaded.returncode == 0 and "-F _tark_completion tark" in loaded.stdout, loaded.stderr
    asked = subprocess.run([tark_path], env={**env, "COMP_WORDS": "tark plu", "COMP_CWORD": "1",
                                             "_TARK_COMPLETE": "bash_complete"},
                           capture_output=True, text=True, timeout=60, check=False)
    assert "plain,plugin" in asked.stdout.splitlines()
    for shell, marker in (("zsh", "compdef _tark_completion tark"), ("fish", "complete --no-files --command tark")):
        script = subprocess.run([tark_path, "completion", shell], capture_output=True, text=True, timeout=60)
        assert script.returncode == 0 and marker in script.stdout
        if shutil.which(shell):
            check = subprocess.run([shell, "-n"], input=script.stdout, capture_output=True, text=True, timeout=60)
            assert check.returncode == 0, check.stderr


def groups() -> Iterator[tuple[str, ...]]:
    from supervisor.cli.main import build_cli

    def walk(group: click.Group, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        with click.Context(group) as ctx:
            subgroups = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
        for name, sub in subgroups:
            if isinstance(sub, click.Group):
                yield from walk(sub, (*path, name))

    yield from walk(build_cli(), ())


def test_command_summaries_are_not_cut_off(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for path in groups():
        result = cli(*path, "--help")
        assert result.exit_code == 0
        listing = result.stdout.split("Commands:\n", 1)[1]
        assert "..." not in listing, f"tark {' '.join(path)} --help cuts a summary:\n{listing}"


# ---------------------------------------------------------------------------------------------- daemon start race


def test_two_concurrent_starts_start_one_daemon(tark_argv: list[str]) -> None:
    starts = [subprocess.Popen([*tark_argv, "supervisor", "start", "--webhook-port", "0"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
              for _ in range(2)]
    try:
        results = [(p.wait(timeout=120), *p.communicate()) for p in starts]
        codes = sorted(code for code, _out, _err in results)
        assert codes == [0, 1], results
        (ok,) = [out for code, out, _err in results if code == 0]
        (refused,) = [err for code, _out, err in results if code == 1]
        assert ok.count("Supervisor daemon started") == 1
        assert "already running" in refused
    finally:
        subprocess.run([*tark_argv, "supervisor", "stop"], capture_output=True, timeout=60, env=dict(os.environ))
