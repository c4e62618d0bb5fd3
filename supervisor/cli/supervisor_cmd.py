"""`tark supervisor start|stop|status`: the optional long-running daemon.

The daemon logs at info by default (TARK_LOG changes it; -v too, in the foreground): its start, webhooks and
metrics, each inbound channel message, worker crashes. Started in the background it writes to `<runtime dir>/supervisor.log`; in the
foreground (systemd) to its stderr. It records where and at which level in `<runtime dir>/daemon-log.json`, which
`tark supervisor status` shows (docs/cli.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from supervisor import paths
from supervisor.channels.client import channel_request
from supervisor.channels.defaults import DEFAULT_HOST, DEFAULT_PORT
from supervisor.cli.output import header, json_option, make_console, print_json
from supervisor.control_client import running_client, socket_path

DAEMON_LOG_LEVEL = "info"
LOG_INFO_NAME = "daemon-log.json"

# `status` forwards to a running daemon and stays thin (docs/performance.md): the daemon's own code (and the
# channel service) is imported by `start` and `stop` only.


@click.group("supervisor")
def supervisor_group() -> None:
    """The optional daemon every command uses while it runs."""


@supervisor_group.command("start")
@click.option("--foreground", is_flag=True, help="Run in this process (for systemd); stop with SIGTERM.")
@click.option("--idle-timeout", "idle_timeout_s", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Stop a plugin's worker after this many idle seconds.")
@click.option("--webhook-port", type=click.IntRange(0, 65535), default=None,
              help=f"Port for channel webhooks [default: {DEFAULT_PORT}; 0 = any free port].")
@click.option("--webhook-host", default=DEFAULT_HOST, show_default=True,
              help="Address for channel webhooks; anything but loopback exposes them to the network.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (default: not served).")
@json_option
@click.pass_context
def start_command(ctx: click.Context, foreground: bool, idle_timeout_s: float, webhook_port: int | None,
                  webhook_host: str, metrics_port: int | None, as_json: bool) -> None:
    """Start the daemon; it also runs channels and serves webhooks.

    It logs at info level (set TARK_LOG=LEVEL to change) to the file `tark supervisor status` shows.
    """
    from supervisor.channels.service import WebhookConfig
    from supervisor.daemon import DaemonError, serve, start_background

    runtime_dir = paths.runtime_dir()
    webhook = WebhookConfig(webhook_host, DEFAULT_PORT if webhook_port is None else webhook_port,
                            explicit=webhook_port is not None or webhook_host != DEFAULT_HOST)
    if foreground:
        if running_client(runtime_dir) is not None:
            raise DaemonError("a supervisor daemon is already running; stop it first: tark supervisor stop")
        _record_log_settings(runtime_dir, _daemon_log_filter(ctx))
        serve(runtime_dir, idle_timeout_s=idle_timeout_s, webhook=webhook, metrics_port=metrics_port)
        return
    webhook_args = ("--webhook-host", webhook_host) + (() if webhook_port is None else ("--webhook-port", str(webhook_port)))
    if metrics_port is not None:
        webhook_args += ("--metrics-port", str(metrics_port))
    pid = start_background(runtime_dir, idle_timeout_s=idle_timeout_s, webhook_args=webhook_args)
    if as_json:
        print_json({"pid": pid, "socket": str(socket_path(runtime_dir)), "log": _log_settings(runtime_dir)})
        return
    click.echo(f"✅ Supervisor daemon started (pid {pid})")
    click.echo(f"Control socket: {socket_path(runtime_dir)}")
    click.echo(f"Log:            {_describe_log(_log_settings(runtime_dir))}")


def _daemon_log_filter(ctx: click.Context) -> str:
    """The daemon's log filter: TARK_LOG if set, else info (debug with -v), applied to this process now."""
    from supervisor.logging_setup import ENV_VAR, configure_logging

    verbose = bool(getattr(ctx.find_root().obj, "verbose", False))
    spec = os.environ.get(ENV_VAR) or ("debug" if verbose else DAEMON_LOG_LEVEL)
    configure_logging(verbose, spec)
    return spec


def _record_log_settings(runtime_dir: Path, spec: str) -> None:
    """Where this (foreground) daemon's log goes: the log file when stderr is it (a background start), else its
    stderr (systemd's journal)."""
    from supervisor.daemon import log_path

    target = log_path(runtime_dir)
    try:
        to_file = os.path.samestat(os.fstat(2), os.stat(target))
    except OSError:
        to_file = False
    document = {"path": str(target) if to_file else None, "filter": spec}
    (runtime_dir / LOG_INFO_NAME).write_text(json.dumps(document) + "\n")


def _log_settings(runtime_dir: Path) -> dict[str, Any]:
    try:
        document = json.loads((runtime_dir / LOG_INFO_NAME).read_text())
        return {"path": document.get("path"), "filter": str(document.get("filter"))}
    except (OSError, ValueError, AttributeError):
        return {"path": None, "filter": None}  # a daemon that did not say (not started by this version)


def _describe_log(settings: dict[str, Any]) -> str:
    where = settings["path"] or "the daemon's stderr (systemd: journalctl --user -u tark-supervisor)"
    return f"{where} (level: {settings['filter'] or 'unknown'}; set TARK_LOG before starting to change it)"


@supervisor_group.command("stop")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for a graceful stop (calls in flight are cancelled) before killing the daemon.")
@click.option("--force", is_flag=True, help="Kill the daemon and its workers at once, without a graceful stop.")
@json_option
def stop_command(timeout_s: float, force: bool, as_json: bool) -> None:
    """Stop the daemon and its workers; returns once they are gone."""
    from supervisor.daemon import stop_running

    stopped = stop_running(paths.runtime_dir(), timeout_s, force=force)
    if as_json:
        print_json({"stopped": stopped is not None, "pid": stopped.pid if stopped else None,
                    "killed": stopped.killed if stopped else False})
    elif stopped is None:
        click.echo("No supervisor daemon is running.")
    elif stopped.killed:
        how = "killed" if force else f"killed: it did not stop within {timeout_s:g} s"
        click.echo(f"✅ Supervisor daemon stopped (pid {stopped.pid}, {how})")
    else:
        click.echo(f"✅ Supervisor daemon stopped (pid {stopped.pid})")


@supervisor_group.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show the daemon, its log and each worker's usage.

    For each worker: pid, state, memory, CPU, calls, restarts and sandbox layers.
    """
    runtime_dir = paths.runtime_dir()
    client = running_client(runtime_dir)
    if client is None:
        if as_json:
            print_json({"running": False, "pid": None, "socket": str(socket_path(runtime_dir)), "workers": [],
                        "webhook": None, "log": None})
        else:
            click.echo("Supervisor daemon: not running (commands run an embedded supervisor)")
        return
    log_settings = _log_settings(runtime_dir)
    with client:
        pid = client.ping()
        workers = [_with_usage(w) for w in client.status()]
        webhook = channel_request(client, "channel_status")["webhook"]
    if as_json:
        print_json({"running": True, "pid": pid, "socket": str(socket_path(runtime_dir)), "workers": workers,
                    "webhook": webhook, "log": log_settings})
        return
    console = make_console()
    header(console, "=== Supervisor ===")
    console.print(f"Daemon:  running (pid {pid})")
    console.print(f"Socket:  {socket_path(runtime_dir)}")
    console.print(f"Log:     {_describe_log(log_settings)}")
    console.print(f"Webhooks: {webhook['url']}/channels/<plugin_id>/webhook" if webhook["url"]
                  else f"Webhooks: not served ({webhook['error']})")
    if not workers:
        console.print("Workers: none running")
    for w in workers:
        usage = (f", {w['uss_mib']:.1f} MiB unique / {w['rss_mib']:.1f} MiB RSS, {w['cpu_s']:.2f} s CPU"
                 if w.get("rss_mib") is not None else "")
        console.print(f"  {w['name']}: {w['state']} (pid {w['pid']}{usage}), calls={w['calls']}, "
                      f"restarts={w['restarts']}"
                      + (f", sandbox: {' '.join(w['layers'])}" if w.get("layers") else "")
                      + (f", last error: {w['last_error']}" if w["last_error"] else ""))


def _with_usage(worker: dict) -> dict:
    if "uss_mib" in worker:  # measured by the daemon (supervisor/worker_usage.py)
        return worker
    import psutil

    worker = dict(worker, rss_mib=None, uss_mib=None, cpu_s=None)
    if worker.get("pid"):
        try:
            process = psutil.Process(worker["pid"])
            memory = process.memory_full_info()  # USS: what stopping this worker would free
            worker["rss_mib"] = memory.rss / 2**20
            worker["uss_mib"] = memory.uss / 2**20
            times = process.cpu_times()
            worker["cpu_s"] = times.user + times.system
        except psutil.Error:
            pass
    return worker


@click.command("status")
@click.argument("name", required=False)
@json_option
def plugin_status_command(name: str | None, as_json: bool) -> None:
    """Show each plugin's worker in the daemon.

    State, uptime, memory, CPU, calls, host calls by capability, denials, restarts, last error (a timeout shows
    as a timeout), lock-down steps not applied, and why it is parked.
    """
    client = running_client(paths.runtime_dir())
    pid = None
    workers: list[dict] = []
    if client is not None:
        with client:
            pid = client.ping()
            workers = [_with_usage(w) for w in client.status() if name is None or w["name"] == name]
    if as_json:
        print_json({"running": client is not None, "pid": pid, "workers": workers})
        return
    if client is None:
        click.echo("No supervisor daemon is running: workers live only as long as one command "
                   "(start one with: tark supervisor start)")
        return
    if not workers:
        click.echo(f"Plugin '{name}' has no worker in the daemon yet" if name else "No plugin has run in the daemon yet")
        return
    console = make_console()
    for w in workers:
        header(console, f"=== {w['name']} ===")
        state = w["state"] + (f" (pid {w['pid']}, up {w['uptime_s']:.0f} s)" if w.get("pid") else "")
        console.print(f"State:      {state}")
        if w.get("parked"):
            console.print(f"Parked:     {w['parked']}")
        if w.get("rss_mib") is not None:
            console.print(f"Memory:     {w['uss_mib']:.1f} MiB unique / {w['rss_mib']:.1f} MiB RSS")
            console.print(f"CPU:        {w['cpu_s']:.2f} s")
        stats = w.get("stats") or {}
        outcomes = ", ".join(f"{kind} {count}" for kind, count in sorted((stats.get("outcomes") or {}).items()))
        console.print(f"Calls:      {w['calls']}" + (f" ({outcomes})" if outcomes else ""))
        host_calls = stats.get("host_calls") or {}
        if host_calls:
            console.print("Host calls: " + ", ".join(
                f"{cap} {c['allowed'] + c['denied']}" + (f" ({c['denied']} denied)" if c["denied"] else "")
                for cap, c in sorted(host_calls.items())))
        console.print(f"Denials:    {stats.get('denials', 0)}")
        console.print(f"Restarts:   {w['restarts']}")
        if w["last_error"]:
            console.print(f"Last error: ({w.get('last_error_kind') or 'error'}) {w['last_error']}")
        for warning in w.get("sandbox_warnings") or []:
            console.print(f"Sandbox:    degraded: {warning}")
