"""The fork server workers are started from, launched with a scrubbed environment so workers hold no secrets.

multiprocess's own fork server inherits the supervisor's whole environment at exec time, and every worker forked
from it keeps that block in memory and in /proc/<pid>/environ however much it clears os.environ afterwards. This
fork server is multiprocess's, exec'd with only the variables Python needs (ENV_ALLOWED), and with its own preload
list, so nothing is patched or set process-wide in multiprocess. Like multiprocess's, it is one per supervisor
process (starting one costs ~0.5 s with wasmtime and the supervisor's modules preloaded) and it exits when the
supervisor process does (multiprocess's "alive" pipe closes).

`WorkerProcess` is a multiprocess Process started from it: `WorkerProcess(target=..., args=...).start()`.
"""

from __future__ import annotations

import io
import os
import re
import socket
from typing import Iterable, Mapping

import multiprocess.context
from multiprocess import connection, forkserver, popen_forkserver, resource_tracker, spawn, util
from multiprocess.context import reduction, set_spawning_popen

# PATH and the locale for the interpreter; PYTHONPATH/PYTHONHOME if the supervisor runs with them; TMPDIR for
# tempfile. HOME, credentials, tokens and everything else stay in the supervisor.
ENV_ALLOWED = re.compile(r"PATH|LANG|LANGUAGE|LC_[A-Z_]+|TZ|TMPDIR|PYTHONPATH|PYTHONHOME")


def scrubbed_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if ENV_ALLOWED.fullmatch(name)}


class _ScrubbedForkServer(forkserver.ForkServer):
    """multiprocess.forkserver.ForkServer whose server process gets `scrubbed_environment(os.environ)`."""

    def __init__(self) -> None:
        super().__init__()
        self._preload_modules = []
        self.pid: int | None = None

    def start(self, preload: Iterable[str]) -> None:
        """Launch the server (once) preloading `preload`; a later call with other modules changes nothing."""
        with self._lock:
            if self._forkserver_pid is None:
                self._preload_modules = list(preload)
        self.ensure_running()

    def ensure_running(self) -> None:
        # ForkServer.ensure_running (multiprocess 0.70.19) with the environment passed to fork_exec.
        with self._lock:
            resource_tracker.ensure_running()
            if self._forkserver_pid is not None:
                pid, _status = os.waitpid(self._forkserver_pid, os.WNOHANG)
                if not pid:
                    return
                os.close(self._forkserver_alive_fd)
                self._forkserver_address = None
                self._forkserver_alive_fd = None
                self._forkserver_pid = None
            cmd = "from multiprocess.forkserver import main; main(%d, %d, %r, **%r)"
            data = {}
            if self._preload_modules:
                data = spawn.get_preparation_data("ignore")
                data = {key: value for key, value in data.items() if key in ("main_path", "sys_path")}
            with socket.socket(socket.AF_UNIX) as listener:
                address = connection.arbitrary_address("AF_UNIX")
                listener.bind(address)
                if not util.is_abstract_socket_namespace(address):
                    os.chmod(address, 0o600)
                listener.listen()
                alive_r, alive_w = os.pipe()
                try:
                    cmd %= (listener.fileno(), alive_r, self._preload_modules, data)
                    exe = spawn.get_executable()
                    args = [exe, *util._args_from_interpreter_flags(), "-c", cmd]
                    pid = _spawn_with_env(exe, args, [listener.fileno(), alive_r], scrubbed_environment(os.environ))
                except BaseException:
                    os.close(alive_w)
                    raise
                finally:
                    os.close(alive_r)
                self._forkserver_address = address
                self._forkserver_alive_fd = alive_w
                self._forkserver_pid = self.pid = pid


def _spawn_with_env(path: str, args: list[str], passfds: list[int], env: Mapping[str, str]) -> int:
    """multiprocess.util.spawnv_passfds with an explicit environment."""
    import _posixsubprocess
    import subprocess

    env_list = [os.fsencode(name) + b"=" + os.fsencode(value) for name, value in env.items()]
    errpipe_read, errpipe_write = os.pipe()
    try:
        return _posixsubprocess.fork_exec(
            args, [os.fsencode(path)], True, tuple(sorted(passfds)), None, env_list,
            -1, -1, -1, -1, -1, -1, errpipe_read, errpipe_write,
            False, False, -1, None, None, None, -1, None,
            subprocess._USE_VFORK,
        )
    finally:
        os.close(errpipe_read)
        os.close(errpipe_write)


SERVER = _ScrubbedForkServer()  # one per process, as multiprocess's own; its lock guards its state


class _Popen(popen_forkserver.Popen):
    def _launch(self, process_obj: multiprocess.context.BaseProcess) -> None:
        # popen_forkserver.Popen._launch, asking our server instead of multiprocess's.
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = SERVER.connect_to_new_process(self._fds)
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class WorkerProcess(multiprocess.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: multiprocess.context.BaseProcess) -> _Popen:
        return _Popen(process_obj)

