"""The plugin registry on disk: installing, validating, replacing, updating, removing, enabling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.registry import (
    InstallError,
    PluginAlreadyInstalled,
    PluginNotFound,
    Registry,
    RegistryError,
)
from supervisor.sources import GitSource, LocalSource, SourceError, parse_source
from supervisor.wasm_check import sha256_file


def local(path: Path) -> LocalSource:
    return parse_source(str(path))


@pytest.fixture
def registry(plugins_root: Path) -> Registry:
    return Registry(plugins_root)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content), to prove an operation changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_from_a_directory(registry: Registry, make_plugin_dir, tmp_path: Path) -> None:
    src = make_plugin_dir(tmp_path / "src", files={"assets/readme.txt": "hi"})
    outcome = registry.install(local(src))
    installed = registry.root / "hello"
    assert outcome.plugin.directory == installed and not outcome.replaced
    assert (installed / "assets" / "readme.txt").read_text() == "hi"
    assert [p.name for p in registry.list().plugins] == ["hello"]
    assert registry.get("hello").enabled

    record = json.loads((installed / ".install.json").read_text())
    assert list(record) == ["is_git", "url", "branch", "path", "installed_at",
                            "commit", "updated_at", "wasm_sha256", "manifest_sha256"]
    assert record["is_git"] is False and record["url"] == str(src)
    assert record["branch"] is None and record["path"] is None and record["commit"] is None
    assert record["installed_at"].endswith("+00:00")
    assert record["wasm_sha256"] == sha256_file(src / "plugin.wasm")
    assert record["manifest_sha256"] == sha256_file(src / "plugin.toml")
    assert not any((registry.root / ".staging").iterdir())


def test_the_install_directory_is_named_after_the_manifest_name(registry, make_plugin_dir, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "some-checkout-dir", name="weather")
    registry.install(local(src))
    assert (registry.root / "weather" / "plugin.toml").is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"wasm_bytes": None}, "Failed to load plugin: file not found: {src}/plugin.wasm"),
    ({"manifest": "[plugin\nname = 1"}, "Failed to parse plugin.toml"),
    ({"version": "1.0"}, "Plugin version must be valid semver: 1.0"),
    ({"type": "widget"}, "Plugin type must be one of"),
    ({"name": "Bad Name!"}, "Plugin name must be lowercase"),
    ({"extra": 'min_tark_version = "99.0.0"'}, "Plugin requires tark >= 99.0.0"),
    ({"wasm_bytes": b"\x00asm\x01\x00\x00\x00\x05"}, "WASM validation failed: "),
    ({"wasm_bytes": b"not wasm at all"}, "WASM validation failed: magic header not detected: bad magic number - expected=[0x0, 0x61, 0x73, 0x6d]"),
])
def test_invalid_plugins_are_refused_and_the_installed_version_stays(
        registry, make_plugin_dir, tmp_path, kwargs, message) -> None:
    registry.install(local(make_plugin_dir(tmp_path / "good", version="1.0.0")))
    before = tree(registry.root / "hello")
    bad = make_plugin_dir(tmp_path / "bad", version=kwargs.pop("version", "2.0.0"), **kwargs)
    with pytest.raises((InstallError, RegistryError)) as info:
        registry.install(local(bad), force=True)
    assert message.format(src=bad) in str(info.value)
    assert ".staging" not in str(info.value)
    assert tree(registry.root / "hello") == before
    assert registry.get("hello").manifest.plugin.version == "1.0.0"
    assert not any((registry.root / ".staging").iterdir())


def test_a_second_install_needs_force_and_force_keeps_data(registry, make_plugin_dir, tmp_path) -> None:
    registry.install(local(make_plugin_dir(tmp_path / "v1", version="1.0.0")))
    data = registry.root / "hello" / "data"
    data.mkdir()
    (data / "storage.json").write_text('{"k": "v"}')

    with pytest.raises(PluginAlreadyInstalled) as info:
        registry.install(local(make_plugin_dir(tmp_path / "v2", version="2.0.0")))
    assert str(info.value).startswith("Plugin 'hello' is already installed")
    assert "tark plugin update hello" in str(info.value) and "--force" in str(info.value)

    outcome = registry.install(local(tmp_path / "v2"), force=True)
    assert outcome.replaced
    assert registry.get("hello").manifest.plugin.version == "2.0.0"
    assert (data / "storage.json").read_text() == '{"k": "v"}'
    assert not any((registry.root / ".trash").iterdir())


def test_update_keeps_data_disabled_and_installed_at(registry, make_plugin_dir, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "src", version="1.0.0")
    registry.install(local(src))
    registry.disable("hello")
    (registry.root / "hello" / "data").mkdir()
    (registry.root / "hello" / "data" / "storage.json").write_text("{}")
    first = json.loads((registry.root / "hello" / ".install.json").read_text())

    make_plugin_dir(src, version="1.1.0", files={"data/storage.json": "from the source"})
    registry.update("hello")

    plugin = registry.get("hello")
    assert plugin.manifest.plugin.version == "1.1.0"
    assert not plugin.enabled
    assert (plugin.data_dir / "storage.json").read_text() == "{}"
    record = json.loads((plugin.directory / ".install.json").read_text())
    assert record["installed_at"] == first["installed_at"]
    assert record["updated_at"] is not None and record["updated_at"] >= first["installed_at"]


def test_update_refuses_a_source_whose_id_changed(registry, make_plugin_dir, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "src")
    registry.install(local(src))
    make_plugin_dir(src, name="other")
    with pytest.raises(RegistryError, match=r"^Plugin ID mismatch: expected 'hello', found 'other'$"):
        registry.update("hello")
    assert registry.get("hello")


def test_update_errors(registry, make_plugin_dir, tmp_path) -> None:
    with pytest.raises(PluginNotFound, match=r"^Plugin 'nope' not found$"):
        registry.update("nope")
    src = make_plugin_dir(tmp_path / "src")
    registry.install(local(src))
    (registry.root / "hello" / ".install.json").unlink()
    with pytest.raises(RegistryError, match="^Missing install metadata: .*hello/.install.json"):
        registry.update("hello")


def test_update_of_a_moved_local_source(registry, make_plugin_dir, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "src")
    registry.install(local(src))
    src.rename(tmp_path / "moved")
    with pytest.raises(RegistryError, match=f"^Local plugin source path not found: {src}$"):
        registry.update("hello")


def test_update_all_counts(registry, make_plugin_dir, tmp_path) -> None:
    registry.install(local(make_plugin_dir(tmp_path / "a", name="alpha")))
    registry.install(local(make_plugin_dir(tmp_path / "b", name="beta")))
    registry.install(local(make_plugin_dir(tmp_path / "c", name="gamma")))
    (registry.root / "beta" / ".install.json").unlink()
    (tmp_path / "c" / "plugin.wasm").write_bytes(b"broken")
    summary = registry.update_all()
    assert [(r.name, r.status) for r in summary.results] == [
        ("alpha", "updated"), ("beta", "skipped"), ("gamma", "failed")]
    assert "WASM validation failed" in summary.results[2].message
    assert (summary.count("updated"), summary.count("skipped"), summary.count("failed")) == (1, 1, 1)
    assert registry.get("gamma")  # the failed update left it installed


def test_remove_enable_disable(registry, make_plugin_dir, tmp_path) -> None:
    registry.install(local(make_plugin_dir(tmp_path / "src")))
    registry.disable("hello")
    assert (registry.root / "hello" / ".disabled").exists() and not registry.get("hello").enabled
    registry.enable("hello")
    assert registry.get("hello").enabled
    registry.remove("hello")
    assert not (registry.root / "hello").exists()
    assert registry.list().plugins == ()
    for operation in (registry.get, registry.remove, registry.enable, registry.disable):
        with pytest.raises(PluginNotFound, match=r"^Plugin 'hello' not found$"):
            operation("hello")


def test_tark_installed_dirs_are_listed_and_broken_dirs_reported(registry, make_plugin_dir, valid_wasm) -> None:
    make_plugin_dir(registry.root / "plain")  # copied by hand: no .install.json
    tark_dir = make_plugin_dir(registry.root / "from-tark", name="from-tark")
    (tark_dir / ".install.json").write_text(json.dumps(
        {"is_git": True, "url": "https://host/o/r", "branch": "main", "path": "tark/x",
         "installed_at": "2026-01-28T12:07:18.123456789+00:00"}, indent=2))
    make_plugin_dir(registry.root / "broken", name="broken", wasm_bytes=None)
    (registry.root / "junk").mkdir()

    listing = registry.list()
    assert [p.name for p in listing.plugins] == ["from-tark", "hello"]
    problems = {p.directory.name: p.message for p in listing.problems}
    assert problems["broken"].startswith("Failed to load plugin: file not found:")
    assert problems["junk"].startswith("No plugin.toml found in")
    record = registry.record(registry.get("from-tark"))
    assert record.branch == "main" and record.path == "tark/x" and record.commit is None
    assert registry.record(registry.get("hello")) is None
    with pytest.raises(PluginNotFound, match="(?s)Plugin 'broken' not found.*does not load"):
        registry.get("broken")


def test_git_installs_record_ref_and_commit(registry, make_plugin_dir, make_git_repo, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "repo" / "plugins" / "hello", version="1.0.0")
    repo = make_git_repo(tmp_path / "repo")
    repo.tag("v1.0.0")
    tagged = repo.head()
    make_plugin_dir(src, version="1.1.0")
    newest = repo.commit("1.1.0")

    registry.install(parse_source(f"{repo.url}#v1.0.0", subdir="plugins/hello"))
    record = registry.record(registry.get("hello"))
    assert (record.is_git, record.url, record.branch, record.path, record.commit) == (
        True, repo.url, "v1.0.0", "plugins/hello", tagged)
    assert registry.get("hello").manifest.plugin.version == "1.0.0"

    registry.install(GitSource(repo.url, tagged[:12], "plugins/hello"), force=True)
    assert registry.record(registry.get("hello")).commit == tagged

    registry.install(GitSource(repo.url, "main", "plugins/hello"), force=True)
    assert registry.record(registry.get("hello")).commit == newest
    assert registry.get("hello").manifest.plugin.version == "1.1.0"


def test_git_update_follows_the_branch(registry, make_plugin_dir, make_git_repo, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "repo", version="1.0.0")
    repo = make_git_repo(src)
    registry.install(GitSource(repo.url))
    make_plugin_dir(src, version="1.0.1")
    head = repo.commit("bump")
    registry.update("hello")
    assert registry.get("hello").manifest.plugin.version == "1.0.1"
    assert registry.record(registry.get("hello")).commit == head


def test_git_errors_leave_nothing_behind(registry, make_plugin_dir, make_git_repo, tmp_path) -> None:
    repo = make_git_repo(make_plugin_dir(tmp_path / "repo"))
    with pytest.raises(SourceError, match=f"^Git ref 'v9' not found in {repo.url}$"):
        registry.install(GitSource(repo.url, "v9"))
    with pytest.raises(SourceError, match="^Subdirectory 'x' not found in repository$"):
        registry.install(GitSource(repo.url, subdir="x"))
    assert registry.list().plugins == ()
    assert not any((registry.root / ".staging").iterdir())


def test_symlink_escape_in_a_source_is_refused(registry, make_plugin_dir, tmp_path) -> None:
    (tmp_path / "secret").write_text("s3cret")
    src = make_plugin_dir(tmp_path / "src")
    (src / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(InstallError, match=f"Symlink points outside the plugin source: {src}/leak"):
        registry.install(local(src))
    assert registry.list().plugins == ()
