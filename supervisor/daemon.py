"""Daemon mode: a long-running supervisor serving the control socket (`tark supervisor start|stop|status`)."""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import attrs
import msgspec

from supervisor import control_client, paths
from supervisor.channels.operations import ChannelError
from supervisor.channels.service import CHANNEL_OPERATIONS, ChannelService, WebhookConfig
from supervisor.credentials import CredentialsError
from supervisor.control import (
    PID_NAME, ControlError, ControlServer, DaemonClient, Reply, Request, socket_path, token_path, worker_lineage,
    write_token,
)
from policy.errors import PolicyError
from supervisor.modules import ModuleCompileError
from supervisor.plugin import PluginLoadError
from supervisor.registry import RegistryError
from supervisor.supervisor import CallRefused, Supervisor
from supervisor.worker_usage import WorkerUsage

log = logging.getLogger(__name__)


# Errors the caller caused (unknown plugin, bad arguments...): the client re-raises them as CallRefused.
USER_ERRORS = (CallRefused, RegistryError, PolicyError, PluginLoadError, ModuleCompileError, ChannelError,
               CredentialsError)


# Each gets the supervisor, the request and the client connection's fd (readable once the client went away).
PLUGIN_OPERATIONS: dict[str, Callable[[Supervisor, Request, int], Reply]] = {
    "call": lambda s, r, fd: Reply(ok=True, result=msgspec.structs.asdict(
        s.call(r.plugin, r.export, r.args, timeout_s=r.timeout_s, instance=r.instance, cancel_fd=fd))),
    "exports": lambda s, r, _fd: Reply(ok=True, exports=s.exports(r.plugin)),
    "end_instance": lambda s, r, _fd: (s.end_instance(r.plugin, r.instance), Reply(ok=True))[1],
    "reset": lambda s, r, _fd: (s.reset(r.plugin), Reply(ok=True))[1],
    "stop_worker": lambda s, r, _fd: (s.stop_worker(r.plugin), Reply(ok=True))[1],
}


class DaemonError(Exception):
    """The daemon could not be started or stopped."""


@attrs.frozen
class OpenFilesLimit:
    before: int
    soft: int
    hard: int


def raise_open_files_limit() -> OpenFilesLimit:
    """Lift the soft RLIMIT_NOFILE to the hard one. Every worker costs the daemon a few descriptors, and the
    soft limit is often 1024 while the hard one is far higher; the admission check (docs/limits.md) then works
    against the real ceiling. Raising the soft limit up to the hard one needs no privilege."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # not possible for NOFILE on Linux, but the kernel's own ceiling is
        target = int(Path("/proc/sys/fs/nr_open").read_text())
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
            return OpenFilesLimit(soft, soft, hard)
        return OpenFilesLimit(soft, target, hard)
    return OpenFilesLimit(soft, soft, hard)


LOG_NAME = "supervisor.log"
START_LOCK_NAME = "start.lock"


def log_path(runtime_dir: Path | None = None) -> Path:
    """Where a daemon started with `tark supervisor start` writes its log (stdout and stderr)."""
    return (runtime_dir or paths.runtime_dir()) / LOG_NAME


def serve(runtime_dir: Path | None = None, *, idle_timeout_s: float = 300.0,
          webhook: WebhookConfig = WebhookConfig(), metrics_port: int | None = None) -> None:
    """Run the daemon in the foreground until `shutdown` or SIGTERM/SIGINT (systemd runs this)."""
    runtime_dir = runtime_dir or paths.runtime_dir()
    stop = threading.Event()
    files = raise_open_files_limit()  # before the fork server starts: it inherits the limit
    if files.soft != files.before:
        log.info("open files limit raised from %d to %d", files.before, files.soft)
    with Supervisor(runtime_dir=runtime_dir, idle_timeout_s=idle_timeout_s) as supervisor, \
            ChannelService(supervisor, supervisor.registry, webhook) as channels:
        usage = WorkerUsage()

        def handle(request: Request, connection_fd: int) -> Reply:
            if request.op == "ping":
                return Reply(ok=True, pid=os.getpid())
            if request.op == "status":
                return Reply(ok=True, pid=os.getpid(), status=usage.annotate(supervisor.status()))
            if request.op == "shutdown":
                stop.set()
                return Reply(ok=True, pid=os.getpid())
            operation = PLUGIN_OPERATIONS.get(request.op)
            channel_operation = CHANNEL_OPERATIONS.get(request.op)
            if operation is None and channel_operation is None:
                return Reply(ok=False, error=f"unknown control operation '{request.op}'")
            try:
                if channel_operation is not None:
                    return channel_operation(channels, request)
                return operation(supervisor, request, connection_fd)
            except USER_ERRORS as exc:
                return Reply(ok=False, refused=True, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - the daemon answers, it does not die
                log.exception("%s on plugin %s failed", request.op, request.plugin)
                return Reply(ok=False, error=f"internal error: {exc}")

        metrics = None
        if metrics_port is not None:
            from supervisor.metrics import serve_metrics  # prometheus-client only when metrics are asked for

            metrics = serve_metrics(metrics_port, supervisor.status)
        if metrics is not None:
            log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", metrics[0].server_port)

        def refuse_peer(pid: int) -> str | None:
            worker = worker_lineage(pid, supervisor.pool.process_ids())
            return None if worker is None else f"pid {pid} is or descends from worker process {worker}"

        server = ControlServer(
            socket_path(runtime_dir), handle, token=write_token(runtime_dir), refuse_peer=refuse_peer,
            on_refused=lambda pid, why: supervisor.security_events(None, "control_refused", {"pid": pid, "reason": why}),
        )
        pid_file = runtime_dir / PID_NAME
        pid_file.write_text(f"{os.getpid()}\n")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="control")
        serving.start()
        log.info("supervisor daemon %d listening on %s", os.getpid(), socket_path(runtime_dir))
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.shutdown()
            serving.join()
            server.server_close()
            if metrics is not None:
                metrics[0].shutdown()
                metrics[0].server_close()
            for path in (socket_path(runtime_dir), token_path(runtime_dir), pid_file):
                path.unlink(missing_ok=True)


def running_client(runtime_dir: Path | None = None) -> DaemonClient | None:
    """A client of the running daemon, or None when no daemon answers."""
    return control_client.running_client(runtime_dir or paths.runtime_dir())


def start_background(runtime_dir: Path | None = None, *, idle_timeout_s: float = 300.0,
                     wait_s: float = 15.0, webhook_args: tuple[str, ...] = ()) -> int:
    """Start the daemon as a detached process; returns its pid once it answers on the control socket.

    Starts are serialized by a lock in the runtime dir: of two concurrent starts, one starts the daemon and the
    other, once that daemon answers, finds it running and raises DaemonError."""
    runtime_dir = runtime_dir or paths.runtime_dir()
    with open(runtime_dir / START_LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if we die
        return _start_locked(runtime_dir, idle_timeout_s, wait_s, webhook_args)


def _start_locked(runtime_dir: Path, idle_timeout_s: float, wait_s: float, webhook_args: tuple[str, ...]) -> int:
    existing = running_client(runtime_dir)
    if existing is not None:
        with existing:
            raise DaemonError(f"a supervisor daemon is already running (pid {existing.ping()})")
    log_file_path = log_path(runtime_dir)
    with open(log_file_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli.main", "supervisor", "start", "--foreground",
             "--idle-timeout", str(idle_timeout_s), *webhook_args],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
            env={**os.environ, "TARK_RUNTIME_DIR": str(runtime_dir)},
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DaemonError(f"the supervisor daemon exited with code {process.returncode}"
                              f"{_last_error(log_file_path)}; see {log_file_path}")
        client = running_client(runtime_dir)
        if client is not None:
            with client:
                return client.ping()
        time.sleep(0.05)
    process.kill()
    raise DaemonError(f"the supervisor daemon did not answer within {wait_s:.0f} s; see {log_file_path}")


@attrs.frozen
class Stopped:
    pid: int
    killed: bool  # SIGKILL (--force, or still running after the timeout) instead of a graceful stop


def stop_running(runtime_dir: Path | None = None, wait_s: float = 10.0, *, force: bool = False) -> Stopped | None:
    """Stop the daemon and return once it is gone; None if none was running.

    Gracefully: the daemon cancels the calls in flight, stops its workers and exits; still running after
    `wait_s`, it is killed. `force`: killed at once. Its workers die with it either way (their fork server
    kills them when the daemon's end of its socket closes), and what a killed daemon leaves on disk is removed."""
    runtime_dir = runtime_dir or paths.runtime_dir()
    client = running_client(runtime_dir)
    if client is None:
        return None
    with client:
        pid = client.ping()
        if not force:
            try:
                client.shutdown()
            except ControlError:
                pass  # it is going away already
    killed = force or not _wait_gone(pid, wait_s)
    if killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not _wait_gone(pid, 5.0):
            raise DaemonError(f"the supervisor daemon (pid {pid}) survived SIGKILL")
        # Its sockets close when its last thread is gone, which can be after the process shows as a zombie.
        _wait_reaped(pid, 2.0)
        _remove_leftovers(runtime_dir)
    return Stopped(pid, killed)


def _wait_gone(pid: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_reaped(pid: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _remove_leftovers(runtime_dir: Path) -> None:
    """A killed daemon's control socket, pid file and worker endpoints. An endpoint nobody listens on any more
    is stale; one that still accepts belongs to a live (embedded) supervisor and stays."""
    for path in (socket_path(runtime_dir), runtime_dir / PID_NAME):
        path.unlink(missing_ok=True)
    for endpoint in runtime_dir.glob("w-*.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(endpoint))
            except ConnectionRefusedError:
                endpoint.unlink(missing_ok=True)
            except OSError:
                pass


def _last_error(log_path: Path) -> str:
    """The daemon's last `Error: ...` line (e.g. a webhook port in use), for the message of a failed start."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("Error: ")]
    return f" ({errors[-1][len('Error: '):]})" if errors else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours (tests) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
