"""`tark plugin add|list|info|enable|disable|remove|update`: texts follow tark (tark-core-abi.md §6).

list and info only read the registry: consent, secrets and the audit trail are imported by the commands that
change an installation (docs/performance.md, "Thin client")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import click

from policy.admin_policy import install_refusal
from policy.grants import Approval, declared_items
from policy.manifest import Manifest
from policy.text import escape_control
from supervisor import paths
from supervisor.control_client import DaemonClient, running_client
from supervisor.cli.output import (cut, echo, header, json_option, make_console, plugin_json, print_json,
                                   status_word, warn)
from supervisor.install_record import InstallRecord
from supervisor.plugin import InstalledPlugin
from supervisor.plugin_limits import display_value, limits_for
from supervisor.registry import Registry, RegistryError, StagedPlugin, UpdateResult
from supervisor.sources import GitSource, LocalSource, parse_source
from supervisor.wasm_check import sha256_file

if TYPE_CHECKING:
    from rich.console import Console


def open_registry() -> Registry:
    return Registry(paths.plugins_dir())


def _capability_bullets(manifest: Manifest) -> list[str]:
    caps = manifest.capabilities
    lines = []
    if caps.storage:
        lines.append("  • Storage access")
    if caps.http:
        lines.append(f"  • HTTP to: {', '.join(caps.http)}")
    if caps.env:
        lines.append(f"  • Env vars: {', '.join(caps.env)}")
    if caps.fs_read:
        lines.append(f"  • Read files: {', '.join(caps.fs_read)}")
    if caps.shell:
        lines.append("  • ⚠️  Shell access (dangerous!)")
    return lines or ["  (none)"]


@click.command("add")
@click.argument("source")
@click.option("-b", "--branch", "ref", metavar="REF", help="Git branch, tag or commit (same as SOURCE#REF).")
@click.option("-p", "--path", "subdir", metavar="SUBDIR", help="Plugin directory inside the source.")
@click.option("--force", is_flag=True, help="Replace an installed plugin of the same id (keeps its data/).")
@click.option("-y", "--yes", is_flag=True, help="Approve every capability the plugin declares (scripts, CI).")
@json_option
def add_command(source: str, ref: str | None, subdir: str | None, force: bool, yes: bool, as_json: bool) -> None:
    """Install a plugin from a directory or git URL.

    Asks to approve each capability the plugin declares (--yes approves them all). The plugin can be used at
    once, also by a running supervisor daemon.
    """
    from supervisor.cli import plugin_consent as consent_ui
    from supervisor.cli.progress import clone_progress
    from supervisor.consent.live import Consent

    console = make_console(err=as_json)
    header(console, "=== Installing Plugin ===")
    parsed = parse_source(source, ref=ref, subdir=subdir)
    if isinstance(parsed, LocalSource):
        console.print(f"Source: {parsed.path} (local)")
    else:
        console.print(f"Repository: {parsed.url}")
        console.print(f"Branch:     {parsed.ref or '(remote default)'}")
        if parsed.subdir:
            console.print(f"Path:       {parsed.subdir}")
    registry = open_registry()
    with clone_progress(console, parsed) as progress, registry.stage(parsed, progress=progress) as staged:
        info = staged.manifest.plugin
        if staged.commit:
            console.print(f"Commit:     {staged.commit}")
        console.print(f"Found plugin: {info.name} v{info.version}")
        console.print(f"Type: {info.type}")
        if info.min_tark_version:
            console.print(f"Requires tark: >= {info.min_tark_version}")
        console.print("Capabilities:")
        for line in _capability_bullets(staged.manifest):
            console.print(line)
        for message in staged.warnings:
            warn(message)
        consent = Consent()
        policy = consent.policy()
        consent_ui.check_install_source(policy, info.name, parsed, staged.wasm_sha256)
        items = declared_items(staged.manifest.capabilities)
        previous = consent.approvals.get(info.name) if force else None
        approved = consent_ui.decide_install(console, consent, policy, info.name, items, previous, yes)
        console.print("Installing...")
        outcome = registry.commit(staged, force=force)
        approval = Approval(staged.manifest_sha256, staged.wasm_sha256, approved,
                            revoked=previous.revoked - approved if previous else frozenset())
        consent.record(info.name, approval, "approval", sorted(approved))
        if previous is not None:
            consent_ui.print_diff(console, info.name, tuple(sorted(previous.items | previous.pending)), items,
                                  approval)
        declined = [i for i in items if i not in approved]
        if declined and not policy.install.admin_only:
            console.print(f"Not approved (denied until you run `tark plugin approve {info.name} ITEM`): "
                          f"{', '.join(escape_control(i) for i in declined)}")
    if as_json:
        doc = plugin_json(outcome.plugin, _record_or_none(registry, outcome.plugin), full=False)
        print_json(dict(doc, approved=sorted(approved), not_approved=declined, warnings=list(staged.warnings)))
        return
    console.print(f"✅ Successfully installed plugin: {outcome.plugin.name}")
    console.print("The plugin is ready to use.")


@click.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List installed plugins."""
    registry = open_registry()
    listing = registry.list()
    for problem in listing.problems:
        warn(f"{problem.directory} is not loaded: {problem.message}")
    if as_json:
        print_json([plugin_json(p, _record_or_none(registry, p), full=False) for p in listing.plugins])
        return
    console = make_console()
    header(console, "=== Installed Plugins ===")
    if listing.plugins:
        from rich import box
        from rich.table import Table

        table = Table(box=box.ROUNDED, highlight=False)
        for column in ("ID", "Version", "Type", "Status", "Description"):
            table.add_column(column, no_wrap=True)
        for plugin in listing.plugins:
            info = plugin.manifest.plugin
            status = "✓ enabled" if plugin.enabled else "✗ disabled"
            table.add_row(plugin.name, info.version, info.type, status, cut(info.description))
        console.print(table)
    else:
        console.print("No plugins installed.")
        console.print("Install a plugin with:")
        console.print("  tark plugin add <git-url>")
    console.print(f"Plugins directory: {registry.root}")


def _record_or_none(registry: Registry, plugin: InstalledPlugin) -> InstallRecord | None:
    try:
        return registry.record(plugin)
    except Exception as exc:  # noqa: BLE001 - a bad record must not hide the plugin from a listing
        warn(str(exc))
        return None


@click.command("info")
@click.argument("plugin_id")
@json_option
def info_command(plugin_id: str, as_json: bool) -> None:
    """Show a plugin's manifest, source, hashes and limits."""
    registry = open_registry()
    plugin = registry.get(plugin_id)
    record = _record_or_none(registry, plugin)
    for message in plugin.warnings:
        warn(message)
    current_wasm = sha256_file(plugin.wasm_path)
    if as_json:
        doc = plugin_json(plugin, record, full=True)
        doc["wasm_sha256"] = current_wasm
        doc["wasm_modified"] = bool(record and record.wasm_sha256 and record.wasm_sha256 != current_wasm)
        doc["limits"] = {name: {"value": value, "source": source, "meaning": meaning}
                         for name, (value, source, meaning) in limits_for(plugin.name).describe().items()}
        print_json(doc)
        return
    _print_info(make_console(), plugin, record, current_wasm)
    _print_limits(make_console(), plugin.name)


def _print_limits(console: Console, name: str) -> None:
    console.print("Limits (docs/limits.md):")
    for limit, (value, source, _meaning) in limits_for(name).describe().items():
        console.print(f"  {limit + ':':<32} {display_value(limit, value):<10} ({source})")


def _print_info(console: Console, plugin: InstalledPlugin, record: InstallRecord | None, current_wasm: str) -> None:
    info = plugin.manifest.plugin
    caps = plugin.manifest.capabilities
    header(console, f"=== Plugin: {plugin.name} ===")
    console.print(f"Name:    {info.name}")
    console.print(f"Version:  {info.version}")
    console.print(f"Type:    {info.type}")
    console.print(f"Status:  {status_word(plugin)}")
    for label, value in (("Description: ", info.description), ("Author:  ", info.author),
                         ("Homepage: ", info.homepage), ("License: ", info.license),
                         ("Min tark version: ", info.min_tark_version or "")):
        if value:
            console.print(f"{label}{value}")
    console.print("Capabilities:")
    console.print(f"  Storage: {'✓' if caps.storage else '✗'}")
    console.print(f"  HTTP:    {', '.join(caps.http) or '✗'}")
    console.print(f"  Env:     {', '.join(caps.env) or '✗'}")
    console.print(f"  FS read: {', '.join(caps.fs_read) or '✗'}")
    console.print(f"  Shell:   {'⚠️ yes (dangerous!)' if caps.shell else '✗'}")
    console.print("Paths:")
    console.print(f"  Install: {plugin.directory}")
    console.print(f"  WASM:    {plugin.wasm_path}")
    console.print(f"  Data:    {plugin.data_dir}")
    console.print("Source:")
    if record is None:
        console.print("  (no install metadata)")
    else:
        if record.is_git:
            console.print(f"  Repository: {record.url}")
            console.print(f"  Ref:        {record.branch or '(remote default)'}")
            if record.path:
                console.print(f"  Path:       {record.path}")
            console.print(f"  Commit:     {record.commit or '(unknown)'}")
        else:
            console.print(f"  Path:       {record.url} (local)")
        console.print(f"  Installed:  {record.installed_at}")
        if record.updated_at:
            console.print(f"  Updated:    {record.updated_at}")
    console.print("Integrity:")
    recorded = record.wasm_sha256 if record else None
    note = "" if recorded in (None, current_wasm) else f"  ⚠️ changed since install (recorded {recorded})"
    console.print(f"  WASM sha256:     {current_wasm}{note}")
    if record and record.manifest_sha256:
        console.print(f"  Manifest sha256: {record.manifest_sha256}")


@click.command("enable")
@click.argument("plugin_id")
@json_option
def enable_command(plugin_id: str, as_json: bool) -> None:
    """Enable a plugin."""
    open_registry().enable(plugin_id)
    _tell_running_daemon(lambda daemon: daemon.reset(plugin_id))  # a plugin parked after crashes may start again
    if as_json:
        print_json({"id": plugin_id, "enabled": True})
        return
    make_console().print(f"✅ Enabled plugin: {plugin_id}")


def _tell_running_daemon(action: Callable[[DaemonClient], None]) -> None:
    client = running_client(paths.runtime_dir())
    if client is not None:
        with client:
            action(client)


@click.command("disable")
@click.argument("plugin_id")
@json_option
def disable_command(plugin_id: str, as_json: bool) -> None:
    """Disable a plugin (it stays installed)."""
    open_registry().disable(plugin_id)
    _tell_running_daemon(lambda daemon: daemon.stop_worker(plugin_id))
    if as_json:
        print_json({"id": plugin_id, "enabled": False})
        return
    make_console().print(f"✅ Disabled plugin: {plugin_id}")


@click.command("remove")
@click.argument("plugin_id")
@json_option
def remove_command(plugin_id: str, as_json: bool) -> None:
    """Uninstall a plugin, its data/ directory included."""
    from supervisor.consent.live import Consent
    from supervisor.secrets import SecretStore

    registry = open_registry()
    console = make_console(err=as_json)
    header(console, "=== Uninstalling Plugin ===")
    registry.remove(plugin_id)
    SecretStore().forget(plugin_id)  # a later plugin of the same name must not inherit them
    Consent().approvals.forget(plugin_id)
    _tell_running_daemon(lambda daemon: daemon.stop_worker(plugin_id))
    if as_json:
        print_json({"id": plugin_id, "removed": True})
        return
    console.print(f"✅ Successfully uninstalled plugin: {plugin_id}")


def _describe(record: InstallRecord) -> str:
    return GitSource(record.url, record.branch, record.path).describe() if record.is_git else record.url


@click.command("update")
@click.argument("plugin_id", required=False)
@click.option("--all", "update_all", is_flag=True, help="Update every installed plugin.")
@json_option
def update_command(plugin_id: str | None, update_all: bool, as_json: bool) -> None:
    """Re-install a plugin from its recorded source.

    Keeps data/, the enabled state, installed_at and the approvals of unchanged capabilities.
    """
    from supervisor.cli import plugin_consent as consent_ui
    from supervisor.consent.live import Consent

    if plugin_id and update_all:
        raise click.UsageError("Give a plugin ID or --all, not both")
    if not plugin_id and not update_all:
        raise click.UsageError("Specify a plugin ID or use --all")
    registry = open_registry()
    console = make_console(err=as_json)
    consent = Consent()
    before = {p.name: declared_items(p.manifest.capabilities) for p in registry.list().plugins}
    policy = consent.policy()

    def vet(staged: StagedPlugin) -> None:
        refusal = install_refusal(policy, name=staged.name, git_host=consent_ui.git_host(staged.source),
                                  wasm_sha256=staged.wasm_sha256)
        if refusal is not None:
            raise RegistryError(f"Cannot update '{staged.name}': {refusal}")
    if plugin_id:
        header(console, "=== Updating Plugin ===")
        record = registry.record(registry.get(plugin_id))
        if record is not None:
            console.print(f"Updating {plugin_id} from {_describe(record)}")
        outcome = registry.update(plugin_id, vet)
        consent_ui.record_update(consent, console, outcome.plugin, before.get(plugin_id, ()))
        if as_json:
            print_json(_update_json([UpdateResult(plugin_id, "updated", "")]))
            return
        console.print(f"✅ Updated plugin: {plugin_id}")
        return

    header(console, "=== Updating Plugins ===")

    def report(result: UpdateResult) -> None:
        if result.status == "updated":
            consent_ui.record_update(consent, console, registry.get(result.name), before.get(result.name, ()))
            console.print(f"✅ Updated {result.name}")
        elif result.status == "skipped":
            console.print(f"Skipped {result.name}: {result.message}")
        else:
            echo(f"Error: failed to update {result.name}: {result.message}", err=True)

    summary = registry.update_all(on_result=report, vet=vet)
    if as_json:
        print_json(_update_json(summary.results))
    else:
        console.print(f"Done. updated={summary.count('updated')}, skipped={summary.count('skipped')}, "
                      f"failed={summary.count('failed')}")
    if summary.count("failed"):
        raise click.exceptions.Exit(1)


def _update_json(results: Sequence[UpdateResult]) -> dict:
    return {"results": [{"id": r.name, "status": r.status, "message": r.message or None} for r in results],
            **{status: sum(r.status == status for r in results) for status in ("updated", "skipped", "failed")}}
