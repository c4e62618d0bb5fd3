"""The on-disk plugin registry: `<plugins_dir>/<id>/` directories in tark's layout (tark-core-abi.md §5).

Concurrency and crash safety:
- `<root>/.lock` is flock'ed: shared to read, exclusive to change anything. Slow work (git clone, copying,
  validation) happens in a private staging directory outside the exclusive lock; only the swap is inside.
- Each staging directory `<root>/.staging/<token>/` has a sibling `<token>.lock` that its owner holds for
  its whole life, so a staging directory whose lock can be taken belongs to a dead process.
- A swap first writes `<root>/.journal/<id>.json` naming the staged tree, the final directory and the trash
  directory, then renames: old -> trash, old data/ -> staged, staged -> final. Every Registry open recovers
  under the exclusive lock: if the staged tree is gone the swap completed (drop the trash), else it is
  rolled back (data/ and the old version put back). Then stale staging and trash directories are deleted.
  So a kill -9 at any point leaves either the old or the new version installed, with its data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator, Literal

import attrs

from policy.errors import ManifestError
from policy.manifest import Manifest
from supervisor.atomic_file import fsync_dir
from supervisor.install_record import (
    InstallRecord,
    InstallRecordError,
    now_rfc3339,
    read_install_record,
    write_install_record,
    write_json_atomic,
)
from supervisor.plugin import (
    DATA_DIR,
    DISABLED_MARKER,
    INSTALL_RECORD,
    MANIFEST_FILE,
    InstalledPlugin,
    PluginLoadError,
    load_plugin_dir,
)
from supervisor.sources import (
    CopyLimits,
    GitSource,
    LocalSource,
    Source,
    SourceError,
    copy_plugin_tree,
    fetch_git,
)

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
JOURNAL_DIR = ".journal"

# Called with the name of each swap step just after it is done. Only crash tests pass one.
StepHook = Callable[[str], None]


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says why and what to do."""


class PluginNotFound(RegistryError):
    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        super().__init__(f"Plugin '{name}' not found" + (f"\n{detail}" if detail else ""))


class PluginAlreadyInstalled(RegistryError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Plugin '{name}' is already installed\n"
                         f"Use 'tark plugin update {name}' to update it, or 'tark plugin add --force' to replace it.")


class InstallError(RegistryError):
    """The staged plugin is invalid (manifest, wasm, copy rules, git)."""


@attrs.frozen
class LoadProblem:
    """A directory in the registry that does not load as a plugin."""

    directory: Path
    message: str


@attrs.frozen
class Listing:
    plugins: tuple[InstalledPlugin, ...]  # sorted by id
    problems: tuple[LoadProblem, ...]


@attrs.frozen
class StagedPlugin:
    """A validated copy of a plugin, ready to be swapped into place by `Registry.commit`."""

    tree: Path
    manifest: Manifest
    warnings: tuple[str, ...]
    source: Source
    commit: str | None
    wasm_sha256: str
    manifest_sha256: str

    @property
    def name(self) -> str:
        return self.manifest.name


@attrs.frozen
class InstallOutcome:
    plugin: InstalledPlugin
    record: InstallRecord
    replaced: bool


UpdateStatus = Literal["updated", "skipped", "failed"]


@attrs.frozen
class UpdateResult:
    name: str
    status: UpdateStatus
    message: str = ""


@attrs.frozen
class UpdateSummary:
    results: tuple[UpdateResult, ...]

    def count(self, status: UpdateStatus) -> int:
        return sum(1 for r in self.results if r.status == status)


def source_from_record(record: InstallRecord, cwd: Path | None = None) -> Source:
    if record.is_git:
        return GitSource(url=record.url, ref=record.branch, subdir=record.path or None)
    path = Path(os.path.expanduser(record.url))
    if not path.is_absolute():  # tark records the path as typed
        path = (cwd or Path.cwd()) / path
    if record.path:
        path = path / record.path
    if not path.is_dir():
        raise RegistryError(f"Local plugin source path not found: {path}")
    return LocalSource(path=Path(os.path.abspath(path)), typed=record.url)


class Registry:
    def __init__(self, root: Path, *, copy_limits: CopyLimits = CopyLimits(),
                 step_hook: StepHook | None = None) -> None:
        self.root = root
        self._copy_limits = copy_limits
        self._step_hook = step_hook
        root.mkdir(parents=True, exist_ok=True)
        self._recover_if_needed()

    # ------------------------------------------------------------------ reading

    def list(self) -> Listing:
        with self._locked(exclusive=False):
            return self._scan()

    def get(self, name: str) -> InstalledPlugin:
        with self._locked(exclusive=False):
            # Our installs live in a directory named after the id: load just that one. Only a directory laid out
            # otherwise (e.g. installed by tark itself) needs the full scan.
            direct = self.root / name
            if not name.startswith(".") and "/" not in name and (direct / MANIFEST_FILE).is_file():
                try:
                    plugin = load_plugin_dir(direct)
                except (PluginLoadError, ManifestError):
                    plugin = None
                if plugin is not None and plugin.name == name:
                    return plugin
            return self._get(self._scan(), name)

    def record(self, plugin: InstalledPlugin) -> InstallRecord | None:
        """The install record of `plugin`, None if it has none. Raises RegistryError if it is unreadable."""
        try:
            return read_install_record(plugin.directory)
        except InstallRecordError as exc:
            raise RegistryError(str(exc)) from None

    # ------------------------------------------------------------------ installing

    def install(self, source: Source, *, force: bool = False) -> InstallOutcome:
        with self.stage(source) as staged:
            return self.commit(staged, force=force)

    @contextlib.contextmanager
    def stage(self, source: Source, progress: Callable[[str], None] | None = None) -> Iterator[StagedPlugin]:
        """Fetch, copy and validate `source` in a private staging directory (no registry lock held).
        `progress` hears a git clone's progress lines."""
        # Imported here: reading the registry (every command) must not import wasmtime or the capabilities.
        from supervisor.capabilities.storage import strip_shipped_data
        from supervisor.wasm_check import WasmValidationError, sha256_file, validate_wasm

        with self._staging_dir() as work:
            commit: str | None = None
            if isinstance(source, GitSource):
                checkout = fetch_git(source, work / "clone", progress)
                origin, commit = checkout.tree, checkout.commit
                shown = source.url + (f"/{source.subdir}" if source.subdir else "")
            else:
                origin = shown = source.path
            tree = work / "tree"
            try:
                copy_plugin_tree(origin, tree, skip_top_level=frozenset({DISABLED_MARKER, INSTALL_RECORD}),
                                 limits=self._copy_limits)
            except SourceError as exc:
                raise InstallError(str(exc).replace(str(origin), str(shown))) from None
            strip_shipped_data(tree / DATA_DIR, log)  # a source's data/ is never trusted (only storage.json)
            if isinstance(source, GitSource):
                shutil.rmtree(work / "clone", ignore_errors=True)
            try:
                loaded = load_plugin_dir(tree)
                validate_wasm(loaded.wasm_path.read_bytes())
            except (PluginLoadError, ManifestError, WasmValidationError) as exc:
                # Name the user's files, not our staging copy.
                raise InstallError(str(exc).replace(str(tree), str(shown))) from None
            yield StagedPlugin(
                tree=tree, manifest=loaded.manifest, source=source, commit=commit,
                warnings=tuple(w.replace(str(tree), str(shown)) for w in loaded.warnings),
                wasm_sha256=sha256_file(loaded.wasm_path),
                manifest_sha256=sha256_file(tree / MANIFEST_FILE),
            )

    def commit(self, staged: StagedPlugin, *, force: bool = False, _update_of: InstalledPlugin | None = None,
               _installed_at: str | None = None) -> InstallOutcome:
        """Swap a staged plugin into place. Without `force`, an installed plugin of that id is an error."""
        name = staged.name
        now = now_rfc3339()
        with self._locked(exclusive=True):
            listing = self._scan()
            same_id = [p for p in listing.plugins if p.name == name]
            if _update_of is not None:
                if not same_id:
                    raise RegistryError(f"Plugin '{name}' is not installed")
                final = same_id[0].directory
            else:
                final = self.root / name
                elsewhere = [p for p in same_id if p.directory != final]
                if elsewhere:
                    raise RegistryError(f"Plugin '{name}' is already installed in {elsewhere[0].directory}\n"
                                        f"Remove it first with 'tark plugin remove {name}'.")
                if final.exists() and not force:
                    raise PluginAlreadyInstalled(name)
            replacing = final.exists()
            keep_disabled = _update_of is not None and (final / DISABLED_MARKER).exists()
            move_data = replacing and (final / DATA_DIR).is_dir()
            if move_data and (staged.tree / DATA_DIR).exists():
                shutil.rmtree(staged.tree / DATA_DIR)  # the installed plugin's data wins over the source's
            if keep_disabled:
                (staged.tree / DISABLED_MARKER).touch()
            record = self._new_record(staged, installed_at=_installed_at or now,
                                      updated_at=now if _update_of is not None else None)
            write_install_record(staged.tree, record)

            trash = self._new_trash_path() if replacing else None
            journal = self.root / JOURNAL_DIR / f"{name}.json"
            journal.parent.mkdir(exist_ok=True)
            entry = {"final": str(final), "staged": str(staged.tree),
                     "trash": str(trash) if trash else None, "move_data": move_data}
            write_json_atomic(journal, entry)
            self._step("journal-written")
            try:
                if trash is not None:
                    os.rename(final, trash)
                    self._step("old-moved")
                    if move_data:
                        os.rename(trash / DATA_DIR, staged.tree / DATA_DIR)
                        self._step("data-moved")
                os.rename(staged.tree, final)
                fsync_dir(self.root)
                self._step("new-in-place")
            except OSError:
                _replay(entry)  # put the previous version back before reporting the error
                journal.unlink()
                raise
            journal.unlink()
            fsync_dir(journal.parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        plugin = load_plugin_dir(final)
        return InstallOutcome(plugin=plugin, record=record, replaced=replacing)

    def update(self, name: str, vet: Callable[[StagedPlugin], None] | None = None) -> InstallOutcome:
        """Re-fetch `name` from its recorded source; keeps data/, .disabled and installed_at. `vet` may refuse
        the staged version (raise) before anything changes (the admin policy's install rules)."""
        plugin = self.get(name)
        record = self.record(plugin)
        if record is None:
            raise RegistryError(f"Missing install metadata: {plugin.install_record_path}\n"
                                f"Reinstall with 'tark plugin add <source> --force'.")
        with self.stage(source_from_record(record)) as staged:
            if staged.name != name:
                raise RegistryError(f"Plugin ID mismatch: expected '{name}', found '{staged.name}'")
            if vet is not None:
                vet(staged)
            return self.commit(staged, force=True, _update_of=plugin, _installed_at=record.installed_at or None)

    def update_all(self, on_result: Callable[[UpdateResult], None] | None = None,
                   vet: Callable[[StagedPlugin], None] | None = None) -> UpdateSummary:
        results = []
        for plugin in self.list().plugins:
            try:
                if self.record(plugin) is None:
                    result = UpdateResult(plugin.name, "skipped", f"no install metadata "
                                                                  f"({plugin.install_record_path})")
                else:
                    self.update(plugin.name, vet)
                    result = UpdateResult(plugin.name, "updated")
            except (RegistryError, SourceError, OSError) as exc:
                result = UpdateResult(plugin.name, "failed", str(exc))
            results.append(result)
            if on_result is not None:
                on_result(result)
        return UpdateSummary(tuple(results))

    # ------------------------------------------------------------------ changing state

    def remove(self, name: str) -> None:
        """Delete the plugin directory, data/ included (tark's behaviour)."""
        with self._locked(exclusive=True):
            plugin = self._get(self._scan(), name)
            trash = self._new_trash_path()
            os.rename(plugin.directory, trash)
            fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def enable(self, name: str) -> InstalledPlugin:
        with self._locked(exclusive=True):
            plugin = self._get(self._scan(), name)
            (plugin.directory / DISABLED_MARKER).unlink(missing_ok=True)
            return plugin

    def disable(self, name: str) -> InstalledPlugin:
        with self._locked(exclusive=True):
            plugin = self._get(self._scan(), name)
            (plugin.directory / DISABLED_MARKER).touch()
            return plugin

    # ------------------------------------------------------------------ internals

    def _scan(self) -> Listing:
        plugins: dict[str, InstalledPlugin] = {}
        problems: list[LoadProblem] = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            directory = Path(entry.path)
            try:
                plugin = load_plugin_dir(directory)
            except (PluginLoadError, ManifestError) as exc:
                problems.append(LoadProblem(directory, str(exc)))
                continue
            if plugin.name in plugins:
                problems.append(LoadProblem(directory, f"duplicate plugin id '{plugin.name}' "
                                                       f"(also in {plugins[plugin.name].directory}); ignored"))
                continue
            plugins[plugin.name] = plugin
        return Listing(tuple(sorted(plugins.values(), key=lambda p: p.name)), tuple(problems))

    def _get(self, listing: Listing, name: str) -> InstalledPlugin:
        for plugin in listing.plugins:
            if plugin.name == name:
                return plugin
        broken = [p for p in listing.problems if p.directory.name == name]
        detail = f"The directory {broken[0].directory} exists but does not load:\n{broken[0].message}" if broken else ""
        raise PluginNotFound(name, detail)

    def _new_record(self, staged: StagedPlugin, *, installed_at: str, updated_at: str | None) -> InstallRecord:
        source = staged.source
        if isinstance(source, GitSource):
            return InstallRecord(is_git=True, url=source.url, branch=source.ref, path=source.subdir,
                                 installed_at=installed_at, commit=staged.commit, updated_at=updated_at,
                                 wasm_sha256=staged.wasm_sha256, manifest_sha256=staged.manifest_sha256)
        return InstallRecord(is_git=False, url=str(source.path), branch=None, path=None,
                             installed_at=installed_at, commit=None, updated_at=updated_at,
                             wasm_sha256=staged.wasm_sha256, manifest_sha256=staged.manifest_sha256)

    def _step(self, name: str) -> None:
        if self._step_hook is not None:
            self._step_hook(name)

    def _new_trash_path(self) -> Path:
        trash_root = self.root / TRASH_DIR
        trash_root.mkdir(exist_ok=True)
        return trash_root / secrets.token_hex(8)

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _staging_dir(self) -> Iterator[Path]:
        staging = self.root / STAGING_DIR
        token = secrets.token_hex(8)
        lock_path = staging / f"{token}.lock"
        work = staging / token
        # Created under the shared lock so that recovery (exclusive) never sees the lock file unlocked.
        with self._locked(exclusive=False):
            staging.mkdir(exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            work.mkdir()
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            os.close(fd)

    def _recover_if_needed(self) -> None:
        if any(_has_entries(self.root / d) for d in (JOURNAL_DIR, STAGING_DIR, TRASH_DIR)):
            with self._locked(exclusive=True):
                self._recover()

    def _recover(self) -> None:
        """Finish or roll back interrupted swaps, then delete what dead processes left behind."""
        journal_dir = self.root / JOURNAL_DIR
        for journal in sorted(journal_dir.glob("*.json")) if journal_dir.is_dir() else ():
            try:
                entry = json.loads(journal.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                journal.unlink(missing_ok=True)  # written atomically, so unreadable = never acted on
                continue
            outcome = _replay(entry)
            log.warning("recovered an interrupted install of %s: %s", journal.stem, outcome)
            fsync_dir(self.root)
            journal.unlink()
        for leftover in journal_dir.glob(".*.tmp") if journal_dir.is_dir() else ():
            leftover.unlink(missing_ok=True)

        staging = self.root / STAGING_DIR
        if staging.is_dir():
            for lock_path in staging.glob("*.lock"):
                try:
                    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # its install just finished and removed it (that cleanup takes no registry lock)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live install owns it
                finally:
                    os.close(fd)
                log.debug("removing staging directory %s left by a dead process", staging / lock_path.stem)
                shutil.rmtree(staging / lock_path.stem, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
            for entry in staging.iterdir():
                if entry.is_dir() and not (staging / f"{entry.name}.lock").exists():
                    shutil.rmtree(entry, ignore_errors=True)
        trash = self.root / TRASH_DIR
        if trash.is_dir():
            for entry in trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True)


def _replay(entry: dict) -> str:
    """Finish or undo the swap described by a journal entry; returns what was done."""
    final, staged = Path(entry["final"]), Path(entry["staged"])
    trash = Path(entry["trash"]) if entry.get("trash") else None
    if not staged.exists():
        return "completed"  # staged -> final was done; the trash is deleted by the caller's sweep
    if trash is not None and trash.exists():
        if entry.get("move_data") and (staged / DATA_DIR).exists() and not (trash / DATA_DIR).exists():
            os.rename(staged / DATA_DIR, trash / DATA_DIR)
        os.rename(trash, final)
    shutil.rmtree(staged, ignore_errors=True)
    return "rolled back to the previous version" if trash is not None else "rolled back"


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(True for _ in entries)
    except FileNotFoundError:
        return False
