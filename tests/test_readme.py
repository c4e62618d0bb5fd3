"""The README's "Using it" section runs as written: its bash block is extracted and run, line for line, against a
private data dir (the fixture's TARK_* directories), so the README cannot drift from the commands again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TARK_SCRIPT

README = REPO_ROOT / "README.md"


def using_it_block(text: str) -> str:
    """The first ```bash block after the "## Using it" heading."""
    section = text.split("\n## Using it\n", 1)[1]
    body = section.split("```bash\n", 1)[1]
    return body.split("\n```", 1)[0]


def test_the_block_is_found_and_covers_the_command_groups() -> None:
    block = using_it_block(README.read_text())
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[0] == "source .venv/bin/activate"
    for group in ("plugin add", "plugin call", "chat", "tool run", "auth status", "channel start", "channel send",
                  "supervisor start", "supervisor stop", "plugin secret set", "plugin audit", "plugin auth"):
        assert any(f"tark {group}" in line for line in commands), group


@pytest.mark.skipif(not (REPO_ROOT / ".venv/bin/activate").exists() or not TARK_SCRIPT.exists(),
                    reason="needs the checkout's .venv (ops/scripts/test.sh makes it)")
def test_using_it_runs_as_written(tmp_path: Path) -> None:
    for example in ("echo-provider", "word-tools", "audit-hook", "echo-channel", "oauth-provider", "credentials-channel"):
        assert (REPO_ROOT / "examples" / example / "plugin.wasm").exists(), "run examples/build.py first"
    script = tmp_path / "using-it.sh"
    script.write_text("set -euo pipefail\nset -x\n" + using_it_block(README.read_text()) + "\n")
    runtime = Path(os.environ["TARK_RUNTIME_DIR"])
    try:
        done = subprocess.run(["bash", str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
                              env=dict(os.environ), check=False)
    finally:
        subprocess.run([str(TARK_SCRIPT), "supervisor", "stop", "--force"], capture_output=True, timeout=60,
                       env=dict(os.environ), check=False)
    assert done.returncode == 0, f"README line failed:\n{done.stderr[-3000:]}\n{done.stdout[-2000:]}"
    assert "Error:" not in done.stderr
    out = done.stdout
    assert "✅ Sent to demo" in out and "hello over a webhook" in out
    # the inbound message reached the daemon log at the default level, where `supervisor start` said the log is
    log = (runtime / "supervisor.log").read_text()
    assert f"Log:            {runtime / 'supervisor.log'} (level: info" in out
    assert "inbound (poll) conversation=webhook user=webhook: hello over a webhook" in log
