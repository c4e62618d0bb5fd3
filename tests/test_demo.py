"""The README's demo command keeps working: it installs every example plugin and runs it through the supervisor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_every_step_as_expected():
    subprocess.run([sys.executable, str(ROOT / "examples" / "build.py")], check=True, capture_output=True)
    done = subprocess.run([sys.executable, str(ROOT / "ops" / "demo.py")], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Demo finished: every step behaved as expected." in done.stdout
    assert "Successfully installed plugin: echo-provider" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
