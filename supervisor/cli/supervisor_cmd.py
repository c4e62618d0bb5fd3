"""`tark supervisor start|stop|status`: the optional long-running daemon."""

from __future__ import annotations

import click

from supervisor import paths
from supervisor.channels.client import channel_request
from supervisor.channels.defaults import DEFAULT_HOST, DEFAULT_PORT
from supervisor.cli.output import header, make_console, print_json
from supervisor.control_client import running_client, socket_path

# `status` forwards to a running daemon and stays thin (docs/performance.md): the daemon's own code (and the
# channel service) is imported by `start` and `stop` only.


@click.group("supervisor")
def supervisor_group() -> None:
    """Run the supervisor as a daemon that every tark command uses while it runs."""


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
def start_command(foreground: bool, idle_timeout_s: float, webhook_port: int | None, webhook_host: str,
                  metrics_port: int | None) -> None:
    """Start the daemon (it also runs started channels and serves their webhooks)."""
    from supervisor.channels.service import WebhookConfig
    from supervisor.daemon import DaemonError, serve, start_background

    runtime_dir = paths.runtime_dir()
    webhook = WebhookConfig(webhook_host, DEFAULT_PORT if webhook_port is None else webhook_port,
                            explicit=webhook_port is not None or webhook_host != DEFAULT_HOST)
    if foreground:
        if running_client(runtime_dir) is not None:
            raise DaemonError("a supervisor daemon is already running; stop it first: tark supervisor stop")
        serve(runtime_dir, idle_timeout_s=idle_timeout_s, webhook=webhook, metrics_port=metrics_port)
        return
    webhook_args = ("--webhook-host", webhook_host) + (() if webhook_port is None else ("--webhook-port", str(webhook_port)))
    if metrics_port is not None:
        webhook_args += ("--metrics-port", str(metrics_port))
    pid = start_background(runtime_dir, idle_timeout_s=idle_timeout_s, webhook_args=webhook_args)
    click.echo(f"✅ Supervisor daemon started (pid {pid})")
    click.echo(f"Control socket: {socket_path(runtime_dir)}")


@supervisor_group.command("stop")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for a graceful stop (calls in flight are cancelled) before killing the daemon.")
@click.option("--force", is_flag=True, help="Kill the daemon and its workers at once, without a graceful stop.")
def stop_command(timeout_s: float, force: bool) -> None:
    """Stop the daemon and every worker it runs; returns once they are gone."""
    from supervisor.daemon import stop_running

    stopped = stop_running(paths.runtime_dir(), timeout_s, force=force)
    if stopped is None:
        click.echo("No supervisor daemon is running.")
    elif stopped.killed:
        how = "killed" if force else f"killed: it did not stop within {timeout_s:g} s"
        click.echo(f"✅ Supervisor daemon stopped (pid {stopped.pid}, {how})")
    else:
        click.echo(f"✅ Supervisor daemon stopped (pid {stopped.pid})")


@supervisor_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status_command(as_json: bool) -> None:
    """Show whether the daemon runs, and each worker's pid, state, memory, CPU, calls and restarts."""
    runtime_dir = paths.runtime_dir()
    client = running_client(runtime_dir)
    if client is None:
        if as_json:
            print_json({"running": False, "pid": None, "socket": str(socket_path(runtime_dir)), "workers": [],
                        "webhook": None})
        else:
            click.echo("Supervisor daemon: not running (commands run an embedded supervisor)")
        return
    with client:
        pid = client.ping()
        workers = [_with_usage(w) for w in client.status()]
        webhook = channel_request(client, "channel_status")["webhook"]
    if as_json:
        print_json({"running": True, "pid": pid, "socket": str(socket_path(runtime_dir)), "workers": workers,
                    "webhook": webhook})
        return
    console = make_console()
    header(console, "=== Supervisor ===")
    console.print(f"Daemon:  running (pid {pid})")
    console.print(f"Socket:  {socket_path(runtime_dir)}")
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (as supervisor status, workers only).")
def plugin_status_command(name: str | None, as_json: bool) -> None:
    """Each plugin's worker in the daemon: state, uptime, memory, CPU, calls, host calls by capability, denials,
    restarts, last error (a timeout shows as a timeout), lock-down steps not applied, and why it is parked."""
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
