"""Which lockdown layers hold is visible to the operator: `tark supervisor status` and `tark plugin status`
(text and --json) list them for each worker of a real daemon."""

from __future__ import annotations

import json

from test_daemon import daemon  # noqa: F401 - the fixture: a real daemon with the plugin "dplug"

CORE = {"nnp", "rlimits", "netns", "landlock", "nodump", "seccomp"}


def test_status_lists_each_workers_lockdown_layers(daemon, run_tark) -> None:  # noqa: F811
    assert run_tark("plugin", "call", "dplug", "echo", "x").returncode == 0
    for command in (("supervisor", "status", "--json"), ("plugin", "status", "--json")):
        done = run_tark(*command)
        assert done.returncode == 0, done.stderr
        (worker,) = json.loads(done.stdout)["workers"]
        assert CORE <= set(worker["layers"]), worker
    text = run_tark("supervisor", "status").stdout
    assert "seccomp" in text and "landlock" in text, text
