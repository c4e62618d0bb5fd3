"""Many workers in one daemon: the daemon lifts its soft descriptor limit, refuses a worker before it could run
out of descriptors, memory or the admin policy's worker count (existing workers never suffer), reaps idle
workers under pressure (least recently used first), and keeps `status` fast."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Callable

import attrs
import psutil
import pytest

from policy.admin_policy import parse_admin_policy
from supervisor.admission import Admission
from supervisor.control import DaemonClient
from supervisor.worker_usage import WorkerUsage
from supervisor.workers import NO_CAPACITY
from wasm_fixtures import make_guest

TINY = r"""
  (func (export "ping") (result i32) (i32.const 0))
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


def _descriptors() -> dict[str, int]:
    kinds: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        kind = target if target.startswith("anon_inode") else target.split(":[")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _tiny_plugins(tmp_path: Path, count: int) -> list:
    return [make_guest(tmp_path / f"p{i}", TINY, name=f"tiny-{i}", type="tool") for i in range(count)]


def test_an_idle_worker_costs_the_supervisor_five_descriptors(tmp_path: Path, make_pool) -> None:
    # its socket's connection, listener and mailbox, the pidfd and the exit-status pipe; the eventfd that wakes a
    # call waiting on HTTP or a websocket only exists once the worker makes such a call
    plugins = _tiny_plugins(tmp_path, 11)
    pool = make_pool()
    pool.call(plugins[0], "ping", [], None).raise_for_error()
    before = _descriptors()
    for plugin in plugins[1:]:
        pool.call(plugin, "ping", [], None).raise_for_error()
    after = _descriptors()
    grown = {kind: (after.get(kind, 0) - before.get(kind, 0)) / 10 for kind in after if after[kind] != before.get(kind)}
    assert grown == {"socket": 2, "anon_inode:[eventfd]": 1, "anon_inode:[pidfd]": 1, "pipe": 1}


def test_under_pressure_the_least_recently_used_idle_worker_is_stopped(tmp_path: Path, make_pool) -> None:
    a, b, c, d = _tiny_plugins(tmp_path, 4)
    two = Admission(lambda: parse_admin_policy("[limits]\nmax_workers = 2", "test-policy.toml"))
    pool = make_pool(admission=two.refusal, pressure_idle_s=0)
    for plugin in (a, b, c):
        pool.call(plugin, "ping", [], None).raise_for_error()
    assert states(pool) == {"tiny-0": "stopped", "tiny-1": "running", "tiny-2": "running"}
    pool.call(b, "ping", [], None).raise_for_error()  # b is now more recent than c
    pool.call(d, "ping", [], None).raise_for_error()
    assert states(pool) == {"tiny-0": "stopped", "tiny-1": "running", "tiny-2": "stopped", "tiny-3": "running"}
    assert pool.call(a, "ping", [], None).ok  # a stopped worker starts again when called


def test_a_worker_used_a_moment_ago_is_not_stopped_for_another_the_new_one_is_refused(tmp_path: Path,
                                                                                        make_pool) -> None:
    a, b = _tiny_plugins(tmp_path, 2)
    one = Admission(lambda: parse_admin_policy("[limits]\nmax_workers = 1", "test-policy.toml"))
    pool = make_pool(admission=one.refusal, pressure_idle_s=60)
    first = pool.call(a, "ping", [], None).raise_for_error()
    refused = pool.call(b, "ping", [], None)
    assert refused.error_kind == NO_CAPACITY
    assert refused.error_message == ("cannot start a worker for plugin 'tiny-1': 1 workers are running, the most the "
                                     "admin policy allows ([limits] max_workers = 1 in test-policy.toml); stop a "
                                     "plugin's worker or raise max_workers")
    assert pool.call(a, "ping", [], None).raise_for_error().worker_pid == first.worker_pid
    assert states(pool) == {"tiny-0": "running", "tiny-1": "stopped"}


def states(pool) -> dict[str, str]:
    return {status.name: status.state for status in pool.status()}


def test_a_daemon_near_its_descriptor_limit_refuses_new_workers_and_the_running_ones_go_on(
        tmp_path: Path, cli, tark_argv, stop_daemon) -> None:
    for index in range(30):
        make_guest(tmp_path / f"src{index}", TINY, name=f"tiny-{index}", type="tool")
        assert cli("plugin", "add", "--yes", str(tmp_path / f"src{index}")).exit_code == 0
    pid = start_daemon(tark_argv, (200, 200))  # a hard limit: raising the soft one cannot help here
    started, refused = [], None
    with DaemonClient(Path(os.environ["TARK_RUNTIME_DIR"])) as client:
        for index in range(30):
            result = client.call(f"tiny-{index}", "ping", [])
            if result.error is not None:
                refused = result
                break
            started.append(result)
        assert refused is not None, "30 workers fit under 200 descriptors: the test needs a lower limit"
        assert 5 <= len(started)
        assert refused.error_kind == NO_CAPACITY
        assert refused.error.startswith(f"cannot start a worker for plugin 'tiny-{len(started)}': file descriptors: ")
        assert "of the supervisor's 200 (open files limit) are open" in refused.error
        assert len(os.listdir(f"/proc/{pid}/fd")) < 200
        for index, first in enumerate(started):  # the same workers answer, nothing was stopped or broken
            again = client.call(f"tiny-{index}", "ping", [])
            assert (again.error, again.worker_pid) == (None, first.worker_pid)
        states = {w["name"]: w["state"] for w in client.status()}
    assert sorted(states.values()).count("running") == len(started)
    assert "crashed" not in states.values()


def test_a_worker_that_would_leave_too_little_memory_is_refused_naming_memory(tmp_path: Path, make_pool) -> None:
    (plugin,) = _tiny_plugins(tmp_path, 1)
    greedy = Admission(lambda: parse_admin_policy("[limits]\nmin_available_memory_mib = 1e9", "test-policy.toml"))
    refused = make_pool(admission=greedy.refusal).call(plugin, "ping", [], None)
    assert refused.error_kind == NO_CAPACITY
    assert refused.error_message.startswith("cannot start a worker for plugin 'tiny-0': memory: ")
    assert "MiB stay reserved ([limits] min_available_memory_mib in test-policy.toml)" in refused.error_message


@pytest.mark.parametrize(("text", "problem"), [
    ("[limits]\nmax_workers = 0", "limits.max_workers: must be a whole number of at least 1, got 0"),
    ("[limits]\nmax_workers = 2.5", "limits.max_workers: must be a whole number of at least 1, got 2.5"),
    ("[limits]\nmin_available_memory_mib = -1", "limits.min_available_memory_mib: must be a positive number, got -1"),
    ("[limits.plugins.echo]\nmax_workers = 2", "limits.plugins.echo.max_workers: bounds the whole supervisor: set it "
                                               "in [limits] itself"),
])
def test_supervisor_wide_limits_in_the_admin_policy_are_checked(text: str, problem: str) -> None:
    from policy.admin_policy import AdminPolicyError

    with pytest.raises(AdminPolicyError) as refused:
        parse_admin_policy(text, "policy.toml")
    assert str(refused.value) == f"policy.toml: {problem}"
    policy = parse_admin_policy("[limits]\nmax_workers = 3\nmin_available_memory_mib = 64\ncall_timeout_s = 5")
    assert (policy.max_workers, policy.min_available_memory_mib, policy.limit_defaults) == (3, 64, {"call_timeout_s": 5})


def test_status_reads_each_workers_memory_and_cpu_as_the_kernel_reports_them(tmp_path: Path, make_pool) -> None:
    plugins = _tiny_plugins(tmp_path, 3)
    pool = make_pool()
    pids = [pool.call(plugin, "ping", [], None).raise_for_error().worker_pid for plugin in plugins]
    usage = WorkerUsage()
    for _ in range(2):  # the second time the USS comes from the daemon's cache: no call ran meanwhile
        workers = usage.annotate([attrs.asdict(s) for s in pool.status()])
        for worker, pid in zip(workers, pids):
            memory = psutil.Process(pid).memory_full_info()
            assert worker["pid"] == pid
            assert abs(worker["uss_mib"] - memory.uss / 2**20) < 0.5
            assert abs(worker["rss_mib"] - memory.rss / 2**20) < 0.5
            assert 0 <= worker["cpu_s"] < 5
    pool.stop(plugins[0].name)
    (stopped, *_) = usage.annotate([attrs.asdict(s) for s in pool.status()])
    assert (stopped["pid"], stopped["uss_mib"], stopped["rss_mib"], stopped["cpu_s"]) == (None, None, None, None)
