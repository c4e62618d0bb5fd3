"""Plugin sources: how a source string is read, how git is fetched, and the rules for copying a tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.sources import (
    CopyLimits,
    GitSource,
    LocalSource,
    SourceError,
    copy_plugin_tree,
    fetch_git,
    parse_source,
)


# ------------------------------------------------------------------ parse_source


@pytest.mark.parametrize("text", ["./plug", "../x/plug", "/abs/plug"])
def test_path_prefixes_make_a_local_source_and_a_missing_path_is_named(text: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="^Path does not exist: "):
        parse_source(text, cwd=tmp_path)


def test_an_existing_relative_path_is_local_and_absolute(tmp_path: Path) -> None:
    (tmp_path / "plug").mkdir()
    source = parse_source("plug", cwd=tmp_path)
    assert source == LocalSource(path=tmp_path / "plug", typed="plug")


def test_bare_tilde_and_tilde_slash_expand_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x").mkdir()
    assert parse_source("~").path == tmp_path
    assert parse_source("~/x").path == tmp_path / "x"


def test_local_subdir_is_joined(tmp_path: Path) -> None:
    (tmp_path / "repo" / "plugins" / "a").mkdir(parents=True)
    source = parse_source("./repo", subdir="plugins/a", cwd=tmp_path)
    assert source.path == tmp_path / "repo" / "plugins" / "a"


@pytest.mark.parametrize("url", [
    "https://github.com/o/r", "http://host/o/r.git", "ssh://git@host/o/r", "git://host/o/r",
    "file:///srv/repo", "git@github.com:o/r.git",
])
def test_git_url_forms(url: str, tmp_path: Path) -> None:
    assert parse_source(url, cwd=tmp_path) == GitSource(url=url)


def test_url_fragment_is_the_ref_and_must_agree_with_branch(tmp_path: Path) -> None:
    assert parse_source("https://h/o/r#v1.0.0", cwd=tmp_path) == GitSource("https://h/o/r", "v1.0.0")
    assert parse_source("https://h/o/r#dev", ref="dev", cwd=tmp_path) == GitSource("https://h/o/r", "dev")
    assert parse_source("https://h/o/r", ref="dev", subdir="p", cwd=tmp_path) == GitSource("https://h/o/r", "dev", "p")
    with pytest.raises(SourceError, match="Conflicting git refs"):
        parse_source("https://h/o/r#dev", ref="main", cwd=tmp_path)


@pytest.mark.parametrize("text, message", [
    ("-uhttps://evil", "must not start with '-'"),
    ("https://h/o/r#--upload-pack=x", "Invalid git ref"),
    ("not a url", "Path does not exist: not a url"),
    ("https://h/o/r", None),
])
def test_dangerous_or_unknown_sources_are_refused(text: str, message: str | None, tmp_path: Path) -> None:
    if message is None:
        parse_source(text, cwd=tmp_path)
        return
    with pytest.raises(SourceError, match=message):
        parse_source(text, cwd=tmp_path)


@pytest.mark.parametrize("subdir", ["../up", "/abs"])
def test_subdir_must_stay_inside(subdir: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="Invalid --path"):
        parse_source("https://h/o/r", subdir=subdir, cwd=tmp_path)


def test_branch_option_on_a_local_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="git sources only"):
        parse_source(str(tmp_path), ref="main")


# ------------------------------------------------------------------ fetch_git


@pytest.fixture
def repo(tmp_path: Path, make_plugin_dir, make_git_repo):
    make_plugin_dir(tmp_path / "src", version="1.0.0")
    repo = make_git_repo(tmp_path / "src")
    repo.tag("v1.0.0")
    return repo


def test_clone_default_branch_records_head(repo, tmp_path: Path) -> None:
    checkout = fetch_git(GitSource(repo.url), tmp_path / "clone")
    assert checkout.commit == repo.head()
    assert (checkout.tree / "plugin.toml").is_file()


def test_clone_tag_branch_and_commit(repo, tmp_path: Path) -> None:
    first = repo.head()
    repo.branch("dev")
    (repo.path / "extra.txt").write_text("dev")
    dev = repo.commit("dev work")
    repo.switch("main")

    assert fetch_git(GitSource(repo.url, "v1.0.0"), tmp_path / "a").commit == first
    branch = fetch_git(GitSource(repo.url, "dev"), tmp_path / "b")
    assert branch.commit == dev and (branch.tree / "extra.txt").exists()
    by_sha = fetch_git(GitSource(repo.url, dev), tmp_path / "c")
    assert by_sha.commit == dev
    assert fetch_git(GitSource(repo.url, dev[:10]), tmp_path / "d").commit == dev


def test_missing_ref_is_named(repo, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        fetch_git(GitSource(repo.url, "no-such-tag"), tmp_path / "clone")
    assert str(info.value) == f"Git ref 'no-such-tag' not found in {repo.url}"


def test_clone_failure_carries_gits_stderr(tmp_path: Path) -> None:
    url = (tmp_path / "missing").as_uri()
    with pytest.raises(SourceError, match=r"^git clone failed: .*(does not exist|not found|not appear)"):
        fetch_git(GitSource(url), tmp_path / "clone")


def test_missing_subdirectory(repo, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^Subdirectory 'nope' not found in repository$"):
        fetch_git(GitSource(repo.url, subdir="nope"), tmp_path / "clone")


# ------------------------------------------------------------------ copy_plugin_tree


def test_copy_skips_git_and_resolves_inner_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / ".git").mkdir(parents=True)
    (src / ".git" / "config").write_text("x")
    (src / "dist").mkdir()
    (src / "dist" / "real.txt").write_text("hello")
    os.symlink("dist/real.txt", src / "link.txt")
    os.symlink("dist", src / "dist-link")
    copy_plugin_tree(src, tmp_path / "out")
    out = tmp_path / "out"
    assert not (out / ".git").exists()
    assert (out / "link.txt").read_text() == "hello" and not (out / "link.txt").is_symlink()
    assert (out / "dist-link" / "real.txt").read_text() == "hello" and not (out / "dist-link").is_symlink()


def test_symlink_out_of_the_tree_is_refused_and_nothing_is_copied(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(secret, src / "steal.txt")
    with pytest.raises(SourceError, match=r"Symlink points outside the plugin source: .*steal.txt"):
        copy_plugin_tree(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_symlink_loop_and_dangling_link_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    os.symlink("..", src / "sub" / "up")
    with pytest.raises(SourceError, match=r"Symlink loop in plugin source: .*sub/up"):
        copy_plugin_tree(src, tmp_path / "out")
    os.unlink(src / "sub" / "up")
    os.symlink("self", src / "self")
    with pytest.raises(SourceError, match=r"Broken or looping symlink in plugin source: .*self"):
        copy_plugin_tree(src, tmp_path / "out")


def test_size_and_file_count_caps(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for index in range(5):
        (src / f"f{index}").write_bytes(b"x" * 100)
    with pytest.raises(SourceError, match="more than 4 files"):
        copy_plugin_tree(src, tmp_path / "a", limits=CopyLimits(max_files=4))
    with pytest.raises(SourceError, match="larger than"):
        copy_plugin_tree(src, tmp_path / "b", limits=CopyLimits(max_bytes=450))
    copy_plugin_tree(src, tmp_path / "c", limits=CopyLimits(max_files=5, max_bytes=500))
    assert len(list((tmp_path / "c").iterdir())) == 5


def test_fifo_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(SourceError, match="Unsupported file type"):
        copy_plugin_tree(src, tmp_path / "out")
