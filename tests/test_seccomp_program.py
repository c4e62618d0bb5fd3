"""The seccomp program the fork server compiles once (worker/lockdown/seccomp.py, docs/performance.md): each worker
gets exactly the filter libseccomp would have built for its own pid, and that filter, on its own, lets a process
signal itself but nobody else."""

from __future__ import annotations

import json
import os

import pytest

from worker.lockdown import process, seccomp

pytestmark = pytest.mark.skipif(seccomp.compiled() is None, reason="no libseccomp or no x86_64/aarch64")


@pytest.mark.parametrize("pid", [4242, 65_536, 4_194_304])
def test_the_prebuilt_program_patched_for_a_pid_is_libseccomps_own_program_for_that_pid(pid):
    # (A pid equal to another rule's constant, e.g. 21505 = TCGETS, makes libseccomp share that rule's block:
    # a shorter program with the same decisions. The patched one keeps both blocks.)
    assert seccomp._with_pid(seccomp.compiled(), pid) == seccomp._export(seccomp._build(pid))


def test_a_process_with_the_prebuilt_filter_signals_itself_but_not_its_parent_and_cannot_fork():
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # stand-in for a worker: no other layer applies, only the filter
        os.close(read_end)
        seen = {}
        try:
            process.no_new_privs()
            seccomp.install()
            for what, action in {"signal itself": lambda: os.kill(os.getpid(), 0),
                                 "signal its parent": lambda: os.kill(os.getppid(), 0),
                                 "signal init": lambda: os.kill(1, 0),
                                 "fork": lambda: os._exit(0) if os.fork() == 0 else None}.items():
                try:
                    action()
                    seen[what] = "ok"
                except OSError as exc:
                    seen[what] = exc.strerror
        finally:
            os.write(write_end, json.dumps(seen).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        seen = json.loads(pipe.read() or b"{}")
    os.waitpid(child, 0)
    assert seen == {"signal itself": "ok", "signal its parent": "Operation not permitted",
                    "signal init": "Operation not permitted", "fork": "Operation not permitted"}
