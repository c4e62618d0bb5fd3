"""Writing a plugin: `tark plugin new` + `tark plugin build`, in Python (componentize-py) and WAT, from nothing to a
running plugin, as docs/writing-plugins.md tells a newcomer. Python builds take 10-70 s and compiling their 18 MB
component as long again, so builds and compiled modules are cached in examples/.build-cache (keyed by the sha256 of
the sources, the WIT and the componentize-py version; module artifacts by the wasm's sha256), like a user's cache."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from supervisor.plugin_build import BuildError, build_plugin
from supervisor.plugin_scaffold import PLUGIN_TYPES, PROJECT_WIT

REPO = Path(__file__).resolve().parent.parent
BUILD_CACHE = REPO / "examples" / ".build-cache"
SLOW = 280.0  # a cold Python build, or compiling its component, on a busy 2-core machine


@pytest.fixture
def shared_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Python builds and compiled components survive between runs (the rest of the data dirs stay per test)."""
    BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TARK_CACHE_DIR", str(BUILD_CACHE))
    return BUILD_CACHE


def built_example(name: str, destination: Path) -> Path:
    """A copy of examples/<name> built against the project's WIT (from the cache when nothing changed)."""
    directory = destination / name
    shutil.copytree(REPO / "examples" / name, directory, ignore=shutil.ignore_patterns("*.wasm", "__pycache__"))
    build_plugin(directory, BUILD_CACHE / "plugin-builds", wit=PROJECT_WIT)
    return directory


def ok(done) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout


# --- scaffolding: what a newcomer gets wrong -------------------------------------------------------------------

def test_new_refuses_an_unknown_type_naming_the_types(run_tark, tmp_path) -> None:
    done = run_tark("plugin", "new", "hello", "--type", "widget", cwd=tmp_path)
    assert done.returncode == 2
    assert "'widget' is not one of 'auth', 'tool', 'provider', 'channel', 'hook'" in done.stderr
    assert not (tmp_path / "hello").exists()


def test_new_never_touches_an_existing_directory(run_tark, tmp_path) -> None:
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "app.py").write_text("mine")
    done = run_tark("plugin", "new", "hello", "--type", "tool", cwd=tmp_path)
    assert done.returncode == 1
    assert "Error: hello already exists: choose another name or remove it first" in done.stderr
    assert (tmp_path / "hello" / "app.py").read_text() == "mine"


def test_new_refuses_a_name_tark_would_refuse_and_suggests_one(run_tark, tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = run_tark("plugin", "new", "My_Plugin", "--type", "tool", cwd=work)
    assert done.returncode == 1
    assert "'My_Plugin' cannot be a plugin name" in done.stderr and 'name = "my-plugin"' in done.stderr
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("plugin_type", PLUGIN_TYPES)
def test_new_writes_a_manifest_the_project_wit_and_the_source(run_tark, tmp_path, plugin_type) -> None:
    ok(run_tark("plugin", "new", "mine", "--type", plugin_type, cwd=tmp_path))
    plugin = tmp_path / "mine"
    assert (plugin / "wit" / "tark.wit").read_text() == PROJECT_WIT.read_text()
    manifest = (plugin / "plugin.toml").read_text()
    assert f'type = "{plugin_type}"' in manifest and 'wasm = "plugin.wasm"' in manifest
    assert "http" not in manifest and "shell" not in manifest  # nothing the template does not use
    compile((plugin / "app.py").read_text(), "app.py", "exec")  # the template is valid Python


def test_build_without_componentize_py_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    from supervisor.plugin_scaffold import scaffold

    scaffold(tmp_path / "hello", "provider")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BuildError) as caught:
        build_plugin(tmp_path / "hello")
    assert "componentize-py is not installed" in str(caught.value)
    assert "pip install 'tark-supervisor[python-plugins]'" in str(caught.value)


def test_a_python_syntax_error_shows_componentize_py_s_message(run_tark, tmp_path) -> None:
    ok(run_tark("plugin", "new", "hello", "--type", "provider", cwd=tmp_path))
    with (tmp_path / "hello" / "app.py").open("a") as app:
        app.write("\ndef broken(:\n")
    done = run_tark("plugin", "build", "hello", cwd=tmp_path, timeout=SLOW)
    assert done.returncode == 1
    assert "Error: componentize-py failed:" in done.stderr
    assert "SyntaxError: invalid syntax (app.py, line" in done.stderr
    assert "Stack backtrace" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "hello" / "plugin.wasm").exists()


def test_build_outside_a_plugin_directory_says_so(run_tark, tmp_path) -> None:
    done = run_tark("plugin", "build", cwd=tmp_path)
    assert done.returncode == 1 and "has no plugin.toml: is it a plugin directory?" in done.stderr


# --- WAT: every type from nothing to installed -----------------------------------------------------------------

@pytest.mark.parametrize("plugin_type", PLUGIN_TYPES)
def test_a_wat_plugin_of_every_type_builds_and_installs(run_tark, tmp_path, plugin_type) -> None:
    ok(run_tark("plugin", "new", "mine", "--type", plugin_type, "--lang", "wat", cwd=tmp_path))
    assert f"Built {tmp_path / 'mine' / 'plugin.wasm'}" in ok(run_tark("plugin", "build", "mine", cwd=tmp_path))
    assert "Successfully installed plugin: mine" in ok(run_tark("plugin", "add", "--yes", str(tmp_path / "mine")))
    if plugin_type == "tool":
        assert ok(run_tark("tool", "run", "mine", "word_count", "--args", '{"text": "a b c"}')).strip() == "3"


# --- Python: the docs' walk-through, and the examples through the daemon in a locked-down worker ----------------

def test_a_python_provider_from_nothing_answers_tark_chat(run_tark, tmp_path, shared_cache) -> None:
    created = ok(run_tark("plugin", "new", "hello", "--type", "provider", "--lang", "python", cwd=tmp_path))
    assert "tark plugin build hello" in created
    built = ok(run_tark("plugin", "build", "hello", cwd=tmp_path, timeout=SLOW))
    assert "python, provider-world" in built
    assert (tmp_path / "hello" / "plugin.wasm").read_bytes()[4:8] == b"\x0d\x00\x01\x00"  # a component
    ok(run_tark("plugin", "add", "--yes", str(tmp_path / "hello"), timeout=SLOW))
    reply = ok(run_tark("chat", "--provider", "hello", "hi", timeout=SLOW))
    assert reply.strip() == "Hello from Python! You said: hi"
    # the same sources again come from the build cache
    assert "from the build cache" in ok(run_tark("plugin", "build", "hello", cwd=tmp_path))


def test_changed_sources_are_built_again_not_taken_from_the_cache(run_tark, tmp_path, shared_cache) -> None:
    ok(run_tark("plugin", "new", "hello", "--type", "provider", cwd=tmp_path))
    ok(run_tark("plugin", "build", "hello", cwd=tmp_path, timeout=SLOW))
    (tmp_path / "hello" / "app.py").write_text((tmp_path / "hello" / "app.py").read_text() + "\nx = (\n")
    done = run_tark("plugin", "build", "hello", cwd=tmp_path, timeout=SLOW)
    assert done.returncode == 1 and "SyntaxError" in done.stderr


def test_python_examples_run_through_the_daemon_in_a_locked_down_worker(run_tark, tmp_path, shared_cache,
                                                                        monkeypatch) -> None:
    monkeypatch.setenv("HELLO_GREETING", "Hi from the daemon!")
    for name in ("hello-py", "words-py"):
        ok(run_tark("plugin", "add", "--yes", str(built_example(name, tmp_path)), timeout=SLOW))
    ok(run_tark("supervisor", "start", timeout=SLOW))
    try:
        first = ok(run_tark("chat", "--provider", "hello-py", "one", timeout=SLOW)).strip()
        second = ok(run_tark("chat", "--provider", "hello-py", "two", timeout=SLOW)).strip()
        assert first == "Hi from the daemon! You said: one (turn 1)"
        assert second == "Hi from the daemon! You said: two (turn 2)"  # storage kept between calls
        words = ok(run_tark("tool", "run", "words-py", "word_count", "--args", '{"text": "a b c d"}', timeout=SLOW))
        assert words.strip() == "4"
        ok(run_tark("tool", "run", "words-py", "store_note", "--args", '{"note": "kept"}', "--yes", timeout=SLOW))
        assert ok(run_tark("tool", "run", "words-py", "read_note", timeout=SLOW)).strip() == "kept"
        workers = {w["name"]: w for w in json.loads(ok(run_tark("supervisor", "status", "--json")))["workers"]}
        for name in ("hello-py", "words-py"):
            assert workers[name]["state"] == "ready" or workers[name]["calls"] > 0
            if os.geteuid() == 0:
                assert {"seccomp", "landlock", "netns", "uid"} <= set(workers[name]["layers"]), workers[name]
    finally:
        run_tark("supervisor", "stop")


@pytest.mark.parametrize("plugin_type,export,args,expected", [
    ("auth", "display_name", [], "mine"),
    ("hook", "hook_on_error", ["it broke"], None),  # a hook returns 0 and no result buffer
    ("channel", "channel_info", [], '"id":"mine"'),
])
def test_the_python_template_of_each_other_type_builds_and_answers(run_tark, tmp_path, shared_cache, plugin_type,
                                                                   export, args, expected) -> None:
    ok(run_tark("plugin", "new", "mine", "--type", plugin_type, cwd=tmp_path))
    ok(run_tark("plugin", "build", "mine", cwd=tmp_path, timeout=SLOW))
    ok(run_tark("plugin", "add", "--yes", str(tmp_path / "mine"), timeout=SLOW))
    done = run_tark("plugin", "call", "mine", export, *args, "--json", timeout=SLOW)
    result = json.loads(ok(done))
    assert result["ret"] >= 0, result
    assert expected in result["output"] if expected else result["ret"] == 0
