"""Many workers in one daemon: the daemon lifts its soft descriptor limit, refuses a worker before it could run
out of descriptors, memory or the admin policy's worker count (existing workers never suffer), reaps idle
workers under pressure (least recently used first), and keeps `status` fast."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Callable

import psutil
import pytest

from supervisor.control import DaemonClient

TINY = r"""
  (func (export "ping") (param $ret i32) (result i32) (i32.const 0))
"""


def start_daemon(tark_argv: list[str], nofile: tuple[int, int], *extra: str) -> int:
    """`tark supervisor start` with RLIMIT_NOFILE (soft, hard) set for it (the daemon inherits it)."""
    done = subprocess.run([*tark_argv, "supervisor", "start", *extra], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile), check=False)
    assert done.returncode == 0, done.stderr
    with DaemonClient(Path(os.environ["TARK_RUNTIME_DIR"])) as client:
        return client.ping()


@pytest.fixture
def stop_daemon(run_tark) -> Callable[[], None]:
    yield lambda: run_tark("supervisor", "stop")
    run_tark("supervisor", "stop")


def test_the_daemon_lifts_its_soft_open_files_limit_to_the_hard_one(tark_argv, stop_daemon) -> None:
    pid = start_daemon(tark_argv, (256, 4096))
    assert psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)
