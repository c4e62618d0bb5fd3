"""Test-only worker entry points (WorkerPool(worker_entry=...)): the real worker on a kernel that lacks some
sandbox layers. Production never names these; the fork server imports them from the tests directory."""

from __future__ import annotations

from worker.main import run


def run_without_landlock(spec: bytes) -> None:
    run(spec, unavailable=("landlock",))


def run_without_landlock_or_userns(spec: bytes) -> None:
    run(spec, unavailable=("landlock", "userns", "netns"))


def run_attacker(spec: bytes) -> None:
    """The real worker, locked down as in production, whose first Invoke runs `attack` instead of the guest: what
    an attacker who escaped wasmtime inside this worker could do. The targets come as JSON in the call's first
    argument; the answer is {attempt: "blocked: ..." | "SUCCEEDED"} as JSON."""
    _attacker(spec, ())


def run_attacker_without_landlock_or_userns(spec: bytes) -> None:
    _attacker(spec, ("landlock", "userns", "netns"))


def _attacker(spec_bytes: bytes, unavailable: tuple[str, ...]) -> None:
    import json

    from worker import protocol
    from worker.channel import SupervisorLink
    from worker.engine import GuestRuntime
    from worker.lockdown import Lockdown
    from worker.main import _with_module_fd

    spec = _with_module_fd(protocol.decode_spec(spec_bytes))
    lockdown = Lockdown(spec, unavailable)
    lockdown.before_setup()
    with SupervisorLink(spec.endpoint) as link:
        runtime = GuestRuntime(spec, link)
        link.wait_connected(5)
        lockdown.after_setup()
        link.send(protocol.Ready(token=spec.token, layers=lockdown.active, warnings=lockdown.warnings[:16]))
        while True:
            message = link.receive_idle()
            if isinstance(message, protocol.Invoke):
                output = json.dumps(attack(json.loads(message.args[0]))).encode()  # ret = its length, as tark's
                link.send(protocol.InvokeResult(call_id=message.call_id, ret=len(output), output=output))
            elif isinstance(message, protocol.Shutdown):
                runtime.close()
                return


def attack(targets: dict) -> dict[str, str]:
    import ctypes
    import os
    import signal
    import socket

    libc = ctypes.CDLL(None, use_errno=True)

    def attempt(action) -> str:
        try:
            result = action()
        except OSError as exc:
            return f"blocked: {exc.strerror or exc}"
        if isinstance(result, int) and result < 0:  # a raw libc call
            return f"blocked: {os.strerror(ctypes.get_errno())}"
        return "SUCCEEDED"

    def read(path: str):
        with open(path, "rb") as file:
            return file.read(1)

    def write(path: str):
        with open(path, "r+b") as file:
            return file.write(b"\0")

    def tcp():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(("127.0.0.1", targets["tcp_port"]))

    def unix(path: str):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)

    def fork():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    supervisor, sibling = targets["supervisor_pid"], targets["sibling_pid"]
    return {
        "read another plugin's storage": attempt(lambda: read(targets["sibling_storage"])),
        "read another plugin's credentials": attempt(lambda: read(targets["sibling_credentials"])),
        "read the supervisor's environ": attempt(lambda: read(f"/proc/{supervisor}/environ")),
        "read the supervisor's memory": attempt(lambda: read(f"/proc/{supervisor}/mem")),
        "ptrace the supervisor": attempt(lambda: libc.ptrace(16, supervisor, 0, 0)),  # PTRACE_ATTACH
        "ptrace a sibling worker": attempt(lambda: libc.ptrace(16, sibling, 0, 0)),
        "signal the supervisor": attempt(lambda: os.kill(supervisor, 0)),
        "kill a sibling worker": attempt(lambda: os.kill(sibling, signal.SIGKILL)),
        "tcp connect to a local server": attempt(tcp),
        "execve /bin/sh": attempt(lambda: os.execv("/bin/sh", ["/bin/sh", "-c", "exit 0"])),
        "fork": attempt(fork),
        "write another plugin's wasm": attempt(lambda: write(targets["sibling_wasm"])),
        "write the module cache": attempt(lambda: open(os.path.join(targets["module_cache"], "evil"), "wb")),
        "connect to a supervisor unix socket": attempt(lambda: unix(targets["supervisor_socket"])),
        "become root again": attempt(lambda: os.setuid(0)),
        "new namespaces": attempt(lambda: libc.unshare(0x10000000 | 0x40000000)),
    }


def run_attacker_without_seccomp(spec: bytes) -> None:
    """The attacker in a worker whose kernel has no seccomp: what the other layers stop on their own."""
    _attacker(spec, ("seccomp",))
