"""Where a plugin is installed from: a local directory or a git repository, and how to fetch it.

`parse_source` decides the kind with tark's rule (local if the text starts with `/`, `./`, `../`, `~` or
exists on disk) and fixes tark weakness 24 (`~` and `~/x` expand correctly). Git sources accept
`URL#ref` (branch, tag or commit) besides `--branch`. `fetch_git` runs the real `git` with prompts off,
the `ext::` transport refused and `--` before the URL.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path, PurePosixPath
from typing import Callable

import attrs

GIT_TIMEOUT_SECONDS = 600
_URL = re.compile(r"^(https?|ssh|git|file)://[^\s]+$", re.IGNORECASE)
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//)[^\s]+$")
_REF = re.compile(r"^[A-Za-z0-9._/+@{}^~-]+$")
_MAX_STDERR = 2000


class SourceError(Exception):
    """A source that cannot be used: the message says what is wrong."""


@attrs.frozen
class LocalSource:
    path: Path  # absolute, `~` expanded
    typed: str  # as the user wrote it

    def describe(self) -> str:
        return str(self.path)


@attrs.frozen
class GitSource:
    url: str
    ref: str | None = None  # None = the remote's default branch
    subdir: str | None = None

    def describe(self) -> str:
        if self.ref and self.subdir:
            return f"{self.url} ({self.ref}:{self.subdir})"
        if self.ref:
            return f"{self.url} ({self.ref})"
        return self.url + (f" (:{self.subdir})" if self.subdir else "")


Source = LocalSource | GitSource


@attrs.frozen
class Checkout:
    """A fetched git tree: `tree` is the plugin directory inside `clone_dir`."""

    clone_dir: Path
    tree: Path
    commit: str


def parse_source(text: str, *, ref: str | None = None, subdir: str | None = None,
                 cwd: Path | None = None) -> Source:
    if not text or not text.strip():
        raise SourceError("The plugin source is empty: give a directory or a git URL")
    if text.startswith("-"):
        raise SourceError(f"Refusing source '{text}': a source must not start with '-'")
    subdir = _check_subdir(subdir) if subdir else None
    base = cwd or Path.cwd()
    expanded = Path(os.path.expanduser(text)) if text.startswith("~") else Path(text)
    if text.startswith(("/", "./", "../", "~")) or text in (".", "..") or (base / expanded).exists():
        if ref:
            raise SourceError("--branch applies to git sources only; this source is a local directory")
        path = base / expanded
        if subdir:
            path = path / subdir
        if not path.exists():
            raise SourceError(f"Path does not exist: {path}")
        if not path.is_dir():
            raise SourceError(f"Not a directory: {path}\nGive the plugin's directory (the one holding plugin.toml).")
        return LocalSource(path=Path(os.path.abspath(path)), typed=text)

    url, _, fragment = text.partition("#")
    if fragment and ref and fragment != ref:
        raise SourceError(f"Conflicting git refs: '#{fragment}' in the URL and --branch {ref}; give only one")
    ref = ref or fragment or None
    if not (_URL.match(url) or _SCP_LIKE.match(url)):
        raise SourceError(
            f"Path does not exist: {text}\n"
            "It is not a git URL either: use https://, http://, ssh://, git://, file:// or user@host:owner/repo")
    if ref is not None and (ref.startswith("-") or not _REF.match(ref)):
        raise SourceError(f"Invalid git ref '{ref}'")
    return GitSource(url=url, ref=ref, subdir=subdir)


def _check_subdir(subdir: str) -> str:
    path = PurePosixPath(subdir)
    if path.is_absolute() or ".." in path.parts or "\x00" in subdir:
        raise SourceError(f"Invalid --path '{subdir}': give a relative path inside the repository")
    cleaned = str(path)
    return "" if cleaned == "." else cleaned


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k.startswith("GIT_CONFIG")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="", GIT_LFS_SKIP_SMUDGE="1")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-c", "protocol.ext.allow=never", "-c", "core.hooksPath=/dev/null", *args],
            cwd=cwd, env=_git_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=GIT_TIMEOUT_SECONDS, check=False,
        )
    except FileNotFoundError:
        raise SourceError("Failed to run git clone: git is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {args[0]} timed out after {GIT_TIMEOUT_SECONDS} s") from None


Progress = Callable[[str], None]
# git's own progress lines; anything else on its stderr (e.g. a server's "remote:" text) is never shown live
_PROGRESS_LINE = re.compile(r"^(Counting|Compressing|Enumerating|Receiving|Resolving|Updating|Checking out) "
                            r"[A-Za-z ]*: +[0-9]{1,3}% \([0-9]+/[0-9]+\)[^\x00-\x1f\x7f]*$")


def _git_with_progress(args: list[str], progress: Progress) -> subprocess.CompletedProcess[str]:
    """`_git` for a clone, with `--progress`: each progress line of git's stderr (split on CR and LF) goes to
    `progress`; the whole stderr is kept for the error message, as `_git` keeps it."""
    command = ["git", "-c", "protocol.ext.allow=never", "-c", "core.hooksPath=/dev/null", args[0], "--progress",
               *args[1:]]
    try:
        process = subprocess.Popen(command, env=_git_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise SourceError("Failed to run git clone: git is not installed or not on PATH") from None
    timer = threading.Timer(GIT_TIMEOUT_SECONDS, process.kill)
    timer.start()
    kept = bytearray()
    pending = b""
    try:
        assert process.stderr is not None
        while chunk := process.stderr.read1(4096):
            kept += chunk
            del kept[:-4 * _MAX_STDERR]
            pieces = re.split(rb"[\r\n]", pending + chunk)
            pending = pieces.pop()
            for piece in pieces:
                line = piece.decode("utf-8", "replace").strip()
                if _PROGRESS_LINE.match(line):
                    progress(line)
        process.wait()
    finally:
        timed_out = not timer.is_alive() and process.returncode is not None and process.returncode < 0
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if timed_out:
        raise SourceError(f"git {args[0]} timed out after {GIT_TIMEOUT_SECONDS} s")
    stderr = "\n".join(line for line in re.split(r"[\r\n]", kept.decode("utf-8", "replace"))
                       if line.strip() and not _PROGRESS_LINE.match(line.strip()))
    return subprocess.CompletedProcess(command, process.returncode, "", stderr)


def _stderr(result: subprocess.CompletedProcess[str]) -> str:
    text = result.stderr.strip()
    return text[-_MAX_STDERR:] if text else f"exit status {result.returncode}"


def fetch_git(source: GitSource, dest: Path, progress: Progress | None = None) -> Checkout:
    """Clone `source` into `dest` (which must not exist) and return the checked-out tree and commit.
    `progress` hears git's progress lines (e.g. "Receiving objects:  42% (420/1000), 1.2 MiB | 300 KiB/s")."""
    if source.url.startswith("-"):
        raise SourceError(f"Refusing git URL '{source.url}'")

    def clone(*args: str) -> subprocess.CompletedProcess[str]:
        if progress is None:
            return _git(["clone", "--quiet", *args])
        return _git_with_progress(["clone", *args], progress)

    if source.ref is None:
        result = clone("--depth", "1", "--", source.url, str(dest))
        if result.returncode != 0:
            raise SourceError(f"git clone failed: {_stderr(result)}")
    else:
        result = clone("--depth", "1", "--branch", source.ref, "--", source.url, str(dest))
        if result.returncode != 0:
            # Not a branch or tag (or the clone failed for another reason): a full clone can check out a
            # commit; if that clone fails too, its error is the real one.
            shutil.rmtree(dest, ignore_errors=True)
            full = clone("--no-checkout", "--", source.url, str(dest))
            if full.returncode != 0:
                raise SourceError(f"git clone failed: {_stderr(full)}")
            checkout = _git(["checkout", "--quiet", "--detach", f"{source.ref}^{{commit}}", "--"], cwd=dest)
            if checkout.returncode != 0:
                raise SourceError(f"Git ref '{source.ref}' not found in {source.url}")
    head = _git(["rev-parse", "HEAD"], cwd=dest)
    if head.returncode != 0:
        raise SourceError(f"git rev-parse failed: {_stderr(head)}")
    tree = dest / source.subdir if source.subdir else dest
    if not tree.is_dir() or not _inside(tree, dest):
        raise SourceError(f"Subdirectory '{source.subdir}' not found in repository")
    return Checkout(clone_dir=dest, tree=tree, commit=head.stdout.strip())


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


# --------------------------------------------------------------------------- copying a plugin tree

MAX_TREE_BYTES = 256 * 1024 * 1024
MAX_TREE_FILES = 10_000
_SKIPPED_NAMES = frozenset({".git"})


@attrs.frozen
class CopyLimits:
    max_bytes: int = MAX_TREE_BYTES
    max_files: int = MAX_TREE_FILES


def copy_plugin_tree(src: Path, dest: Path, *, skip_top_level: frozenset[str] = frozenset(),
                     limits: CopyLimits = CopyLimits()) -> None:
    """Copy the plugin directory `src` to `dest` (which must not exist), fixing tark weakness 23.

    Symlinks are followed only when they stay inside `src`: the copy holds their content as plain files
    and directories, so the installed tree has no links. A link out of the tree, a dangling link or a loop
    is an error naming it. `.git` is skipped at any depth, and `skip_top_level` names at the top. The whole
    tree is checked (size and file-count caps, file types) before anything is copied.
    """
    root = src.resolve()
    plan: list[tuple[Path, Path | None]] = []  # (source file, None) = a directory to create
    totals = [0, 0]

    def walk(directory: Path, rel: Path, ancestors: frozenset[Path]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise SourceError(f"Cannot read {directory}: {exc.strerror}") from None
        for entry in entries:
            if entry.name in _SKIPPED_NAMES or (rel == Path() and entry.name in skip_top_level):
                continue
            shown = src / rel / entry.name
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise SourceError(f"Broken or looping symlink in plugin source: {shown}") from None
                if not target.is_relative_to(root):
                    raise SourceError(f"Symlink points outside the plugin source: {shown} -> {target}\n"
                                      "Copy the file into the plugin directory instead of linking to it.")
                path = target
            if path.is_dir():
                real = path.resolve()
                if real in ancestors:
                    raise SourceError(f"Symlink loop in plugin source: {shown}")
                _count(totals, 0, limits, shown)
                plan.append((rel / entry.name, None))
                walk(path, rel / entry.name, ancestors | {real})
            elif path.is_file():
                _count(totals, path.stat().st_size, limits, shown)
                plan.append((rel / entry.name, path))
            else:
                raise SourceError(f"Unsupported file type in plugin source (not a file or directory): {shown}")

    walk(root, Path(), frozenset({root}))
    dest.mkdir(parents=False)
    for rel, file in plan:
        if file is None:
            (dest / rel).mkdir()
        else:
            shutil.copy2(file, dest / rel)


def _count(totals: list[int], size: int, limits: CopyLimits, shown: Path) -> None:
    totals[0] += 1
    totals[1] += size
    if totals[0] > limits.max_files:
        raise SourceError(f"Plugin source has more than {limits.max_files} files (at {shown}); "
                          "remove build artifacts or point --path at the plugin directory")
    if totals[1] > limits.max_bytes:
        raise SourceError(f"Plugin source is larger than {limits.max_bytes // (1024 * 1024)} MiB "
                          f"(at {shown}); remove build artifacts or point --path at the plugin directory")
