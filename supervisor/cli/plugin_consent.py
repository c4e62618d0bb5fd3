"""`tark plugin permissions|approve|revoke`, and the approval step of `add` / `update` (docs/permissions.md).

Effective = declared ∩ approved ∩ admin-allowed (policy/grants.py). Approvals are stored by the supervisor
(supervisor/consent/approvals.py), bound to the sha256 of the manifest and the wasm; a running daemon applies a
change on the plugin's next host call.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable
from urllib.parse import urlsplit

import click
from rich.console import Console

from policy.admin_policy import AdminPolicy, install_refusal
from policy.errors import PatternError
from policy.grants import Approval, EffectiveGrants, carried_over, declared_items, diff_items, normalize_item
from policy.text import escape_control
from supervisor import paths
from supervisor.cli.output import header, json_option, make_console, print_json
from supervisor.consent.live import Consent
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.sources import GitSource, Source

_DESCRIBE = {"storage": "store data (tark:storage)", "shell": "run shell commands (dangerous!)",
             "http": "HTTP/websocket requests to", "env": "read the environment variable(s)",
             "fs_read": "read the file(s)"}


def describe_item(item: str) -> str:
    kind, _, value = item.partition(":")
    return f"{_DESCRIBE[kind]} {escape_control(value)}".rstrip()


def is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _refuse_without_terminal(name: str, items: Iterable[str]) -> None:
    listed = ", ".join(escape_control(i) for i in items)
    raise click.ClickException(
        f"plugin '{name}' asks for {listed}, and there is no terminal to ask you; nothing was installed.\n"
        f"Approve every declared item with --yes (`tark plugin add --yes ...`), or install it interactively; "
        f"after installing you can change approvals with `tark plugin approve {name} [ITEM...]` "
        f"and `tark plugin revoke {name} [ITEM...]`.")


def ask_items(console: Console, name: str, items: tuple[str, ...]) -> frozenset[str]:
    """Ask on the terminal: all, item by item, or none (cancels). Returns the approved items."""
    console.print(f"Plugin '{name}' asks for:")
    for index, item in enumerate(items, 1):
        console.print(f"  {index}. {escape_control(item):<40} {describe_item(item)}")
    answer = click.prompt("Approve [a]ll, [e]ach item, or [n]one (cancel the install)",
                          type=click.Choice(["a", "e", "n"]), default="n", show_choices=False)
    if answer == "n":
        raise click.ClickException(f"Installation of '{name}' cancelled: nothing was approved or installed")
    if answer == "a":
        return frozenset(items)
    return frozenset(item for item in items
                     if click.confirm(f"  Approve {escape_control(item)} ({describe_item(item)})?", default=False))


def decide_install(console: Console, consent: Consent, policy: AdminPolicy, name: str, items: tuple[str, ...],
                   previous: Approval | None, yes: bool) -> frozenset[str]:
    """The items approved by this `add` (before anything is installed; may refuse with exit 1)."""
    if policy.install.admin_only:
        console.print(f"Approvals are admin-only on this machine ({policy.source}): the admin policy decides.")
        return frozenset()
    kept = frozenset(i for i in items if previous is not None and i in previous.items)
    to_ask = tuple(i for i in items if i not in kept)
    if not to_ask:
        return kept
    if yes:
        return frozenset(items)
    if not is_interactive():
        _refuse_without_terminal(name, to_ask)
    return kept | ask_items(console, name, to_ask)


def check_install_source(policy: AdminPolicy, name: str, source: Source, wasm_sha256: str) -> None:
    refusal = install_refusal(policy, name=name, git_host=git_host(source), wasm_sha256=wasm_sha256)
    if refusal is not None:
        raise click.ClickException(f"Cannot install '{name}': {refusal}")


def git_host(source: Source) -> str | None:
    if not isinstance(source, GitSource):
        return None
    url = source.url
    host = urlsplit(url).hostname
    if host is None and "@" in url and ":" in url:  # scp-like git@host:org/repo
        host = url.split("@", 1)[1].split(":", 1)[0]
    return (host or "").lower() if not url.startswith("file:") else "localhost"


def print_diff(console: Console, name: str, old: tuple[str, ...], new: tuple[str, ...], approval: Approval) -> None:
    diff = diff_items(old, new)
    if not (diff.added or diff.removed):
        return  # tark's output stays as it is
    console.print("Capability changes:")
    for item in diff.removed:
        console.print(f"  - {escape_control(item)}")
    for item in diff.added:
        state = "approved" if item in approval.items else "PENDING APPROVAL"
        console.print(f"  + {escape_control(item)}  ({state})")
    pending = [i for i in diff.added if i not in approval.items]
    if pending:
        console.print(f"New or widened items stay denied until you approve them: "
                      f"tark plugin approve {name} {' '.join(escape_control(i) for i in pending)}")


def record_update(consent: Consent, console: Console, plugin: InstalledPlugin, old_items: tuple[str, ...]) -> None:
    """After `update`: unchanged items keep their grant, new or widened ones are pending; print the diff."""
    name = plugin.name
    new_items = declared_items(plugin.manifest.capabilities)
    previous = consent.approvals.get(name)
    hashes = consent.hashes(plugin)
    approval = carried_over(previous, new_items, hashes.manifest_sha256, hashes.wasm_sha256)
    consent.record(name, approval, "update", list(approval.items))
    print_diff(console, name, old_items, new_items, approval)


# ------------------------------------------------------------------------------------------ commands


def open_registry() -> Registry:
    return Registry(paths.plugins_dir())


def grants_json(grants: EffectiveGrants, approval: Approval | None, hashes: Any, pinned_ok: bool) -> dict:
    return {
        "plugin": grants.plugin,
        "approved_manifest_sha256": approval.manifest_sha256 if approval else None,
        "approved_wasm_sha256": approval.wasm_sha256 if approval else None,
        "current_manifest_sha256": hashes.manifest_sha256,
        "current_wasm_sha256": hashes.wasm_sha256,
        "pins_match": pinned_ok,
        "problem": grants.problem,
        "items": [{"item": s.item, "declared": True, "approved": s.approved, "admin": s.admin,
                   "effective": s.effective, "why": s.why} for s in grants.items],
    }


@click.command("permissions")
@click.argument("plugin_id")
@json_option
def permissions_command(plugin_id: str, as_json: bool) -> None:
    """Show each capability item: approved, admin, effective, why."""
    plugin = open_registry().get(plugin_id)
    consent = Consent()
    grants = consent.resolve(plugin)
    approval = consent.approvals.get(plugin.name)
    hashes = consent.hashes(plugin)
    pinned_ok = approval is not None and (approval.manifest_sha256, approval.wasm_sha256) == (
        hashes.manifest_sha256, hashes.wasm_sha256)
    if as_json:
        print_json(grants_json(grants, approval, hashes, pinned_ok))
        return
    console = make_console()
    header(console, f"=== Permissions: {plugin.name} ===")
    if grants.problem:
        console.print(f"⚠️  {escape_control(grants.problem)}")
    if not grants.items:
        console.print("  (declares no capabilities)")
    for s in grants.items:
        mark = "✓" if s.effective else "✗"
        console.print(f"  {mark} {escape_control(s.item)}")
        console.print(f"      declared: yes   approved: {'yes' if s.approved else 'no'}   admin: {s.admin}   "
                      f"effective: {'yes' if s.effective else 'no'}")
        console.print(f"      why: {escape_control(s.why)}")
    if approval is None:
        console.print(f"Pins: none (not approved); run `tark plugin approve {plugin.name}`")
    elif not pinned_ok:
        console.print(f"Pins: ⚠️  the files on disk differ from the approved ones; the plugin will not start until "
                      f"`tark plugin approve {plugin.name}`")
    else:
        console.print(f"Pins: wasm sha256 {approval.wasm_sha256}")


def _normalized(plugin: InstalledPlugin, items: tuple[str, ...]) -> tuple[str, ...]:
    declared = declared_items(plugin.manifest.capabilities)
    out = []
    for item in items:
        try:
            normal = normalize_item(item)
        except PatternError as exc:
            raise click.ClickException(str(exc)) from None
        if normal not in declared:
            raise click.ClickException(
                f"'{escape_control(item)}' is not declared by plugin '{plugin.name}' (declared: "
                f"{', '.join(escape_control(i) for i in declared) or 'nothing'})")
        out.append(normal)
    return tuple(out)


def _refuse_if_admin_only(consent: Consent) -> None:
    policy = consent.policy()
    if policy.install.admin_only:
        raise click.ClickException(f"Approvals are admin-only on this machine ({policy.source}); "
                                   "ask your administrator to change the admin policy")


@click.command("approve")
@click.argument("plugin_id")
@click.argument("items", nargs=-1)
@json_option
def approve_command(plugin_id: str, items: tuple[str, ...], as_json: bool) -> None:
    """Approve ITEMs (default: all declared, pinning the files)."""
    plugin = open_registry().get(plugin_id)
    consent = Consent()
    _refuse_if_admin_only(consent)
    previous = consent.approvals.get(plugin.name)
    hashes = consent.hashes(plugin)
    if items:
        chosen = _normalized(plugin, items)
        base = previous or Approval(hashes.manifest_sha256, hashes.wasm_sha256)
        approval = Approval(base.manifest_sha256, base.wasm_sha256, base.items | frozenset(chosen),
                            base.pending - frozenset(chosen), base.revoked - frozenset(chosen))
    else:
        chosen = declared_items(plugin.manifest.capabilities)
        approval = Approval(hashes.manifest_sha256, hashes.wasm_sha256, frozenset(chosen))
    consent.record(plugin.name, approval, "approval", list(chosen))
    if as_json:
        print_json({"plugin": plugin.name, "approved": list(chosen),
                    "pinned_wasm_sha256": None if items else hashes.wasm_sha256})
        return
    console = make_console()
    for item in chosen:
        console.print(f"✅ Approved {escape_control(item)}")
    if not items:
        console.print(f"✅ Pinned {plugin.name} to wasm sha256 {hashes.wasm_sha256}")


@click.command("revoke")
@click.argument("plugin_id")
@click.argument("items", nargs=-1)
@json_option
def revoke_command(plugin_id: str, items: tuple[str, ...], as_json: bool) -> None:
    """Revoke ITEMs (default: every approved item).

    A running worker is denied from its next host call on.
    """
    plugin = open_registry().get(plugin_id)
    consent = Consent()
    _refuse_if_admin_only(consent)
    previous = consent.approvals.get(plugin.name)
    if previous is None:
        raise click.ClickException(f"Plugin '{plugin.name}' has no approvals to revoke")
    chosen = _normalized(plugin, items) if items else tuple(sorted(previous.items))
    approval = Approval(previous.manifest_sha256, previous.wasm_sha256, previous.items - frozenset(chosen),
                        previous.pending - frozenset(chosen), previous.revoked | frozenset(chosen))
    consent.record(plugin.name, approval, "revocation", list(chosen))
    if as_json:
        print_json({"plugin": plugin.name, "revoked": list(chosen)})
        return
    console = make_console()
    for item in chosen:
        console.print(f"✅ Revoked {escape_control(item)}")
